package forward

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/telehub/telehub/devices/topics"
)

// Placeholders of the topic templates.
const (
	// PlaceholderDeviceID is replaced by the device's ID.
	PlaceholderDeviceID = "{device_id}"
	// PlaceholderDeviceType is replaced by the device's type.
	PlaceholderDeviceType = "{device_type}"
)

// Config configures forwarding to an upstream: another Telehub or any MQTT
// broker. Forwarding is off while URL is empty.
type Config struct {
	// URL is the upstream broker: mqtts://host:8883 (also ssl://, tls://)
	// for TLS, mqtt://host:1883 (tcp://) without, wss:// or ws:// for
	// MQTT over WebSocket.
	URL string `yaml:"url"`
	// Username and Password are the upstream credentials. On a Telehub
	// upstream they are an integration's name and secret. Prefer
	// PasswordFile (or TELEHUB_FORWARD_PASSWORD) to a password in the file.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// ClientID is the MQTT client ID at the upstream; empty is
	// telehub-edge-{hostname}.
	ClientID string `yaml:"client_id"`
	// Topic is the template of the telemetry topic; {device_id} and
	// {device_type} are replaced.
	Topic string `yaml:"topic"`
	// QoS of the forwarded messages. Only 1 is supported: with the durable
	// log behind it, it is at least once, and the upstream's store makes it
	// exactly once (a resent reading has the same timestamp and overwrites
	// itself).
	QoS byte `yaml:"qos"`
	// CAFile is a PEM bundle to verify the upstream's certificate with;
	// empty uses the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for the upstream
	// (mutual TLS); a Telehub upstream takes its common name as the
	// integration's name.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Alerts also forwards the hub's alert events, best effort: those raised
	// while the uplink is down are sent when it returns as long as the live
	// stream's replay buffer still holds them.
	Alerts bool `yaml:"alerts"`
	// AlertTopic is the template of the alert topic.
	AlertTopic string `yaml:"alert_topic"`
	// Commands routes commands from the upstream down to the devices
	// registered here: the forwarder subscribes to devices/+/commands/+
	// upstream, queues each command in this hub's command service and
	// publishes the device's answer on devices/{id}/commands/{cid}/result.
	// On a Telehub upstream the integration needs that subscribe filter
	// and devices/+/commands/+/result (or per-device filters) to publish.
	Commands bool `yaml:"commands"`
	// State passes desired state set upstream down to the devices
	// registered here: the forwarder subscribes to devices/+/state/desired
	// upstream and sets each such device's desired state here when it
	// differs. On a Telehub upstream the integration needs that subscribe
	// filter.
	State bool `yaml:"state"`
	// MaxInflight bounds the messages sent and not yet acknowledged by the
	// upstream.
	MaxInflight int `yaml:"max_inflight"`
	// AckTimeout is how long the oldest message in flight may wait for its
	// acknowledgement before the connection is considered dead.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// KeepAlive is the MQTT keep-alive interval.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// RetryMin and RetryMax bound the exponential backoff between
	// connection attempts.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
}

// DefaultConfig returns the defaults: off, QoS 1, devices/{device_id}/telemetry,
// commands routed down.
func DefaultConfig() Config {
	return Config{
		Topic:          topics.Telemetry(PlaceholderDeviceID),
		AlertTopic:     topics.Alerts(PlaceholderDeviceID),
		QoS:            1,
		Commands:       true,
		State:          true,
		MaxInflight:    64,
		AckTimeout:     30 * time.Second,
		ConnectTimeout: 10 * time.Second,
		KeepAlive:      30 * time.Second,
		RetryMin:       time.Second,
		RetryMax:       time.Minute,
	}
}

// Enabled reports whether forwarding is configured.
func (c Config) Enabled() bool { return c.URL != "" }

// Validate checks the values without touching the disk or the network.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || u.Host == "":
		errs = append(errs, fmt.Errorf("forward.url %q: want scheme://host:port, e.g. mqtts://hub.example.com:8883", c.URL))
	case !knownScheme(u.Scheme):
		errs = append(errs, fmt.Errorf("forward.url %q: scheme %q is not one of mqtts, ssl, tls, wss, mqtt, tcp, ws", c.URL, u.Scheme))
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, errors.New("forward.password and forward.password_file: give one"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("forward.cert_file and forward.key_file go together"))
	}
	if err := validTemplate(c.Topic); err != nil {
		errs = append(errs, fmt.Errorf("forward.topic: %w", err))
	}
	if c.Alerts {
		if err := validTemplate(c.AlertTopic); err != nil {
			errs = append(errs, fmt.Errorf("forward.alert_topic: %w", err))
		}
	}
	if c.QoS != 1 {
		errs = append(errs, errors.New("forward.qos: only 1 is supported"))
	}
	if c.MaxInflight < 1 || c.MaxInflight > 4096 {
		errs = append(errs, errors.New("forward.max_inflight must be between 1 and 4096"))
	}
	if c.AckTimeout < time.Second || c.ConnectTimeout < time.Second || c.KeepAlive < time.Second {
		errs = append(errs, errors.New("forward.ack_timeout, connect_timeout and keep_alive must be at least 1s"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("forward.retry_min must be positive and at most forward.retry_max"))
	}
	return errors.Join(errs...)
}

func knownScheme(s string) bool {
	switch s {
	case "mqtts", "ssl", "tls", "wss", "mqtt", "tcp", "ws":
		return true
	}
	return false
}

// secure reports whether the URL's scheme uses TLS.
func secure(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls", "wss":
		return true
	}
	return false
}

// validTemplate checks a topic template: it names the device, and its
// fixed parts are a valid topic name without wildcards.
func validTemplate(t string) error {
	switch {
	case !strings.Contains(t, PlaceholderDeviceID):
		return fmt.Errorf("%q must contain %s", t, PlaceholderDeviceID)
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("%q must not contain wildcards", t)
	case strings.HasPrefix(t, "$"):
		return fmt.Errorf("%q must not start with $", t)
	case len(t) > 1024:
		return fmt.Errorf("longer than 1024 bytes")
	}
	return nil
}

// topic fills a template.
func topic(tmpl, deviceID, deviceType string) string {
	return strings.NewReplacer(PlaceholderDeviceID, deviceID, PlaceholderDeviceType, deviceType).Replace(tmpl)
}

// secrets are what Config names on disk, loaded when the forwarder is made.
type secrets struct {
	password string
	clientID string
	tls      *tls.Config // nil without TLS
}

func (c Config) load() (secrets, error) {
	s := secrets{password: c.Password, clientID: c.ClientID}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return s, fmt.Errorf("forward.password_file: %w", err)
		}
		s.password = strings.TrimRight(string(b), "\r\n")
	}
	if s.clientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		s.clientID = "telehub-edge-" + host
	}
	if !secure(c.URL) {
		return s, nil
	}
	s.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return s, fmt.Errorf("forward.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return s, fmt.Errorf("forward.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		s.tls.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return s, fmt.Errorf("forward.cert_file: %w", err)
		}
		s.tls.Certificates = []tls.Certificate{cert}
	}
	return s, nil
}
