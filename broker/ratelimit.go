package broker

import (
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"
)

// newLimiter returns a token bucket of perSecond with bursts of burst, full
// at the start; perSecond <= 0 switches the limit off (the bucket admits
// everything).
func newLimiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), burst)
}

// maxKeyedLimiters bounds the buckets a keyedLimiters holds.
const maxKeyedLimiters = 10_000

// keyedLimiters holds one token bucket per key (a source address, an
// identity). A bucket that has refilled to its burst is idle: it is the
// same as a new one, so idle buckets are dropped when the map is full. When
// every bucket is busy (more keys active at once than the bound), a new key
// is not limited: it fails open rather than share a bucket with strangers,
// which would let a flood from many keys refuse everyone new; the global
// connect bucket still bounds the whole. Safe for concurrent use.
type keyedLimiters struct {
	perSecond float64
	burst     int
	max       int

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

func newKeyedLimiters(perSecond float64, burst, max int) *keyedLimiters {
	return &keyedLimiters{perSecond: perSecond, burst: burst, max: max, m: map[string]*rate.Limiter{}}
}

// get returns the bucket of key, creating it if there is room; nil if not.
func (k *keyedLimiters) get(key string, now time.Time) *rate.Limiter {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l, ok := k.m[key]; ok {
		return l
	}
	if len(k.m) >= k.max && now.Sub(k.lastSweep) >= time.Second {
		k.lastSweep = now // a sweep is O(n): at most one a second
		for key, l := range k.m {
			if l.TokensAt(now) >= float64(k.burst) {
				delete(k.m, key)
			}
		}
	}
	if len(k.m) >= k.max {
		return nil
	}
	l := newLimiter(k.perSecond, k.burst)
	k.m[key] = l
	return l
}

// allow takes a token from key's bucket if it has one.
func (k *keyedLimiters) allow(key string, now time.Time) bool {
	if k.perSecond <= 0 {
		return true
	}
	l := k.get(key, now)
	return l == nil || l.AllowN(now, 1)
}

// exhausted reports whether key's bucket has no token left, without taking
// one; a key without a bucket has all its tokens.
func (k *keyedLimiters) exhausted(key string, now time.Time) bool {
	if k.perSecond <= 0 {
		return false
	}
	k.mu.Lock()
	l, ok := k.m[key]
	k.mu.Unlock()
	return ok && l.TokensAt(now) < 1
}

// len returns the number of buckets held.
func (k *keyedLimiters) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// connectLimits are the buckets a CONNECT draws on. Failed logins spend
// only their source address's bucket; successful ones spend their
// identity's bucket and then the global one, so a flood of bad logins
// never costs a good client its connection.
type connectLimits struct {
	failures *keyedLimiters // per source address, failed logins
	clients  *keyedLimiters // per identity, successful logins
	global   *rate.Limiter  // all successful logins
}

func newConnectLimits(l Limits) *connectLimits {
	return &connectLimits{
		failures: newKeyedLimiters(l.AuthFailureRate, l.AuthFailureBurst, maxKeyedLimiters),
		clients:  newKeyedLimiters(l.ClientConnectRate, l.ClientConnectBurst, maxKeyedLimiters),
		global:   newLimiter(l.ConnectRate, l.ConnectBurst),
	}
}

// admit takes the tokens of a successful login, or names the limit it is
// over.
func (c *connectLimits) admit(who identity, clientID string, now time.Time) string {
	key := who.kind.String() + ":" + who.name
	if who.kind == KindAnonymous {
		key += clientID // anonymous clients have no name: their client ID is all they are
	}
	if !c.clients.allow(key, now) {
		return limitClientConnectRate
	}
	if !c.global.AllowN(now, 1) {
		return limitConnectRate
	}
	return ""
}

// sourceAddr is the address a client connects from: its IPv4 address, or
// the /64 of its IPv6 address (one host's or one site's usual share).
func sourceAddr(cl *mqtt.Client) string {
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		return cl.Net.Remote
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
