// Package broker wires the embedded mochi-mqtt broker: its listeners (TCP,
// TLS, WebSocket), and the hooks that authenticate devices and integrations,
// confine each to its own topics, bound their rates and sizes, track
// presence, hand telemetry (a device's own, or relayed by an integration
// such as an edge hub) to the ingest pipeline and hold each PUBACK until
// its readings are durable (ackHold); Control carries device control:
// commands out, results and reported state in.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/wal"
)

// Config configures the broker.
type Config struct {
	// Addr is the TCP listener address, e.g. ":1883".
	Addr string `yaml:"addr"`
	// MaxPacketBytes bounds one MQTT packet; larger ones are refused.
	MaxPacketBytes uint32 `yaml:"max_packet_bytes"`
	// WriteQueue is how many outbound messages (deliveries to subscribers,
	// commands) one client may have queued for its connection; past it
	// further ones to that client are dropped and counted. Every client's
	// queue is allocated in full when it connects (8 bytes a slot), so it
	// is most of a small hub's memory per device.
	WriteQueue int32 `yaml:"write_queue"`
	// AllowAnonymous admits clients that send no credentials, confined to
	// topics outside devices/, $SYS and $share and to AnonymousACL (see
	// access.go, siteacl.go).
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// ReceiveMaximum is the number of QoS 1 and 2 publishes an MQTT 5
	// client may have unacknowledged at once, advertised in CONNACK; a
	// client that sends more is disconnected with reason 0x93 (see
	// conform.go). A publish counts until its PUBACK (or PUBCOMP, or a
	// refusing PUBREC) is on the wire, the wait for the log's fsync included.
	ReceiveMaximum uint16 `yaml:"receive_maximum"`
	// ServerKeepAlive, when not zero, replaces the keep alive of every MQTT
	// 5 client (CONNACK Server Keep Alive) and bounds that of MQTT 3.1.1
	// clients, which are refused when theirs is longer or 0; a client
	// silent for one and a half times it is disconnected. Whole seconds.
	ServerKeepAlive time.Duration `yaml:"server_keep_alive"`
	// AnonymousACL are rules for what anonymous clients may publish and
	// subscribe to, within what they may use at all (outside devices/ and
	// $SYS); the first rule that matches decides, and no match allows
	// (siteacl.go).
	AnonymousACL []ACLRule `yaml:"anonymous_acl"`
	// Transport adds TLS, mutual TLS and WebSocket listeners (listeners.go).
	Transport `yaml:",inline"`
	// Limits bounds what one client may do (limits.go).
	Limits `yaml:",inline"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Addr: ":1883", MaxPacketBytes: 256 << 10, WriteQueue: 8192, ReceiveMaximum: 1024, Limits: DefaultLimits()}
}

// Validate checks the values.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("mqtt.addr must not be empty")
	}
	if c.MaxPacketBytes < 1024 {
		return errors.New("mqtt.max_packet_bytes must be at least 1024")
	}
	if c.WriteQueue < 16 {
		return errors.New("mqtt.write_queue must be at least 16")
	}
	var errs []error
	if c.ReceiveMaximum == 0 {
		errs = append(errs, errors.New("mqtt.receive_maximum must be between 1 and 65535"))
	}
	if c.ServerKeepAlive < 0 || c.ServerKeepAlive > 65535*time.Second || c.ServerKeepAlive%time.Second != 0 {
		errs = append(errs, errors.New("mqtt.server_keep_alive must be whole seconds, at most 65535s (0: off)"))
	}
	for i, r := range c.AnonymousACL {
		if err := r.validate(); err != nil {
			errs = append(errs, fmt.Errorf("mqtt.anonymous_acl[%d]: %w", i, err))
		}
	}
	return errors.Join(append(errs, c.Transport.validate(), c.Limits.validate())...)
}

// Registry is what the broker needs of the device registry.
type Registry interface {
	Authenticate(id, token string) (devices.Device, bool)
	Get(id string) (devices.Device, bool)
	// OnChange registers fn, called after each deletion or token rotation.
	OnChange(fn func(devices.Change))
}

// Ingester takes a device's telemetry payload and returns once it is durable.
type Ingester interface {
	Ingest(ctx context.Context, dev ingest.Device, payload []byte, f ingest.Format) (int, error)
	// IngestNoWait is for QoS 0: it does not wait for the log's fsync.
	IngestNoWait(ctx context.Context, dev ingest.Device, payload []byte, f ingest.Format) (int, error)
	// IngestAsync does not wait for the fsync either, but returns the
	// commit to wait on before the readings are acknowledged.
	IngestAsync(ctx context.Context, dev ingest.Device, payload []byte, f ingest.Format) (int, wal.Commit, error)
}

// Broker is the embedded MQTT broker.
type Broker struct {
	srv      *mqtt.Server
	lns      *transports
	access   *accessHook
	retained *retainHook
	cancel   context.CancelFunc

	closeOnce sync.Once
}

// New builds the broker with its hooks and opens its listeners; Start
// begins accepting connections.
func New(cfg Config, reg Registry, ing Ingester, presence Presence, logger *slog.Logger, opts ...Option) (*Broker, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	lns, err := newTransports(cfg)
	if err != nil {
		return nil, err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketBytes
	caps.MaximumClientWritesPending = cfg.WriteQueue
	caps.ReceiveMaximum = cfg.ReceiveMaximum // advertised by mochi; counted by conformHook
	// An acknowledgement carries its reason code and reason string only,
	// never the properties of the packet it acknowledges (mochi copies
	// them by default, and strict MQTT 5 clients refuse such packets).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.TopicAliasMaximum = cfg.TopicAliasMaximum // mochi's default is 65535 (aliases.go)
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: slog.New(quietHandler{logger.Handler(), slog.LevelWarn}).With("component", "mqtt")})
	ctx, cancel := context.WithCancel(context.Background())
	ss := &sessions{}
	m := newBrokerMetrics(o.metrics)
	lns.observeAcks(m.pubackLatency)
	auto := promauto.With(o.metrics)
	auto.NewCounterFunc(prometheus.CounterOpts{Name: "telehub_mqtt_messages_dropped_total",
		Help: "Messages to MQTT clients dropped because the client's write queue (mqtt.write_queue) was full."},
		func() float64 { return float64(atomic.LoadInt64(&srv.Info.MessagesDropped)) })
	warn := newWarnLog(logger)
	conform := newConformHook(srv, cfg, m, warn)
	access := &accessHook{srv: srv, reg: reg, ints: o.integrations, anonymous: cfg.AllowAnonymous, site: cfg.AnonymousACL, conform: conform, limits: cfg.Limits,
		connects: newConnectLimits(cfg.Limits), sessions: ss, m: m, warn: warn}
	retained := newRetainHook(srv, cfg.Limits, ss, m, warn)
	auto.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_mqtt_retained_messages", Help: "Retained messages held for MQTT clients (the hub's own not counted; see mqtt.max_retained)."},
		func() float64 { return float64(retained.usage().count) })
	auto.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_mqtt_retained_bytes", Help: "Bytes of topic and payload of the retained messages held for MQTT clients (see mqtt.max_retained_bytes)."},
		func() float64 { return float64(retained.usage().bytes) })
	for _, h := range []mqtt.Hook{
		conform, // first: a publish over the receive maximum goes no further
		&aliasHook{cfg: cfg.Limits, m: m, warn: warn},
		&limitsHook{srv: srv, cfg: cfg.Limits, sessions: ss, m: m, warn: warn}, // before ingest: refused means not stored
		retained, // after the limits: a refused publish is not retained
		&presenceHook{srv: srv, presence: presence, sessions: ss},
		&ingestHook{srv: srv, ctx: ctx, reg: reg, ing: ing, presence: presence, sessions: ss, warn: warn},
		&relayHook{srv: srv, ctx: ctx, reg: reg, ing: ing, sessions: ss, warn: warn}, // integrations relaying devices' telemetry (relay.go)
		access, // last: the hooks above still know who disconnects
	} {
		if err := srv.AddHook(h, nil); err != nil {
			cancel()
			return nil, fmt.Errorf("broker: add hook %s: %w", h.ID(), err)
		}
	}
	b := &Broker{srv: srv, lns: lns, access: access, retained: retained, cancel: cancel}
	lns.disconnectWith(disconnectClients(srv))
	for _, l := range lns.all() {
		if err := srv.AddListener(l); err != nil {
			b.closeListeners()
			cancel()
			return nil, fmt.Errorf("broker: %w", err)
		}
		logger.Info("mqtt listening", "protocol", l.Protocol(), "addr", l.Address())
	}
	reg.OnChange(b.deviceChanged)
	if o.integrations != nil {
		o.integrations.OnDelete(func(id string) { b.revoke(identity{KindIntegration, id}, true) })
	}
	return b, nil
}

// Start begins accepting connections.
func (b *Broker) Start() error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	return nil
}

// Addr returns the bound TCP address.
func (b *Broker) Addr() string { return b.lns.tcp.Address() }

// Server returns the mochi server, for server-side publishing.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Close disconnects every client and closes the listener. Publishes in flight
// finish their hooks first. Safe to call twice.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		err = b.srv.Close()
		b.cancel()
	})
	return err
}

// disconnectClients disconnects the clients of one listener when it closes,
// as mochi's own function does (DISCONNECT "server shutting down"), but
// reading the clients with Clients.GetAll. mochi's Clients.GetByListener
// takes the clients' read lock twice, so a client that removes itself
// between the two (a disconnect waiting for the write lock) deadlocks the
// broker's Close for good (mochi-mqtt/server#488: it hung a test run here).
func disconnectClients(srv *mqtt.Server) func(listener string) {
	return func(listener string) {
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown) // fails only if already closing
			}
		}
	}
}

// quietHandler drops mochi's records below min: its info lines (hooks added,
// listener attached) are noise in the hub's log.
type quietHandler struct {
	slog.Handler
	min slog.Level
}

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as), h.min}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name), h.min}
}
