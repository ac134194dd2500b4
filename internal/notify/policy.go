package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// metadata are the addresses of cloud instance metadata services, refused
// by default even where the rest of their range would be allowed.
var metadata = []netip.Prefix{
	netip.MustParsePrefix("169.254.169.254/32"), // AWS, GCP, Azure, OpenStack, DigitalOcean
	netip.MustParsePrefix("169.254.170.2/32"),   // AWS ECS task metadata
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud
}

// thisNetwork is 0.0.0.0/8, which some stacks route to the local host.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// Policy decides which addresses webhooks may reach, so that a webhook
// cannot be used to probe the hub's own host or its cloud's metadata
// service. It is checked when a webhook is registered and again on every
// connection, against the address actually dialled (a DNS name that later
// resolves elsewhere gains nothing).
type Policy struct {
	allowLoopback, allowPrivate, requireHTTPS bool
	allow, deny                               []netip.Prefix
}

// NewPolicy builds the policy of a validated config.
func NewPolicy(c Config) Policy {
	p := Policy{allowLoopback: c.AllowLoopback, allowPrivate: c.AllowPrivate, requireHTTPS: c.RequireHTTPS}
	for _, s := range c.AllowCIDRs {
		p.allow = append(p.allow, netip.MustParsePrefix(s))
	}
	for _, s := range c.DenyCIDRs {
		p.deny = append(p.deny, netip.MustParsePrefix(s))
	}
	return p
}

// Check returns why an address is refused, nil when it is allowed. The
// allow list wins over everything, then the deny list, then the built-in
// rules: metadata, link-local, unspecified, multicast and broadcast
// addresses are refused; loopback unless allow_loopback; private ranges
// only when allow_private is off.
func (p Policy) Check(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, pr := range p.allow {
		if pr.Contains(ip) {
			return nil
		}
	}
	for _, pr := range p.deny {
		if pr.Contains(ip) {
			return fmt.Errorf("%s is in %s, which webhooks.deny_cidrs refuses", ip, pr)
		}
	}
	for _, pr := range metadata {
		if pr.Contains(ip) {
			return fmt.Errorf("%s is a cloud metadata address", ip)
		}
	}
	switch {
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return fmt.Errorf("%s is a link-local address", ip)
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return fmt.Errorf("%s is not a host address", ip)
	case ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is a multicast or broadcast address", ip)
	case ip.IsLoopback() && !p.allowLoopback:
		return fmt.Errorf("%s is a loopback address (webhooks.allow_loopback allows it)", ip)
	case ip.IsPrivate() && !p.allowPrivate:
		return fmt.Errorf("%s is a private address (webhooks.allow_private allows it)", ip)
	}
	return nil
}

// CheckURL validates a webhook URL and the addresses its host resolves to
// now. A name that does not resolve is accepted: it is checked again on
// every delivery.
func (p Policy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	switch {
	case len(raw) > 2048:
		return errors.New("at most 2048 characters")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("use an http or https URL")
	case u.Scheme == "http" && p.requireHTTPS:
		return errors.New("use an https URL (webhooks.require_https is on)")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("the URL has no host")
	case u.User != nil:
		return errors.New("credentials in the URL would be shown to every admin; receivers verify the signature instead")
	case u.Fragment != "":
		return errors.New("a URL fragment is never sent; remove it")
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return p.Check(ip)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := p.Check(ip); err != nil {
			return fmt.Errorf("%s resolves to %w", host, err)
		}
	}
	return nil
}

// control is a net.Dialer Control function: it refuses to connect to an
// address the policy refuses.
func (p Policy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook policy: %w", err)
	}
	if err := p.Check(ap.Addr()); err != nil {
		return fmt.Errorf("webhook policy: %w", err)
	}
	return nil
}
