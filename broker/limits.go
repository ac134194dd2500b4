package broker

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// What happens to a client that publishes faster than its message rate.
const (
	// OverRateDrop refuses the publishes over the rate: QoS 0 ones are
	// dropped, MQTT 5 clients get reason 0x96 for QoS 1 and 2. MQTT 3.1.1
	// has no negative acknowledgement and resends only on reconnect, so a
	// 3.1.1 QoS 1 or 2 publish over the rate closes the connection: the
	// device reconnects after its back-off and resends.
	OverRateDrop = "drop"
	// OverRateDisconnect closes the connection (MQTT 5: DISCONNECT 0x96).
	OverRateDisconnect = "disconnect"
)

// Limits bounds what MQTT clients may do, so that no client can cost another
// its service. A zero value switches a limit off. The keys sit directly
// under mqtt: in the configuration file.
type Limits struct {
	// MaxConnections bounds the clients connected at once; a client over
	// the bound gets CONNACK "server busy" (MQTT 3.1.1: "server unavailable").
	MaxConnections int `yaml:"max_connections"`
	// ConnectRate bounds new connections per second over the whole broker
	// (token bucket of ConnectBurst); a client over the rate gets CONNACK
	// "connection rate exceeded" (MQTT 3.1.1: "server unavailable").
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// MessageRate bounds the publishes per second of one device or
	// anonymous client (token bucket of MessageBurst). Integrations are
	// trusted by their ACL and not limited.
	MessageRate  float64 `yaml:"message_rate"`
	MessageBurst int     `yaml:"message_burst"`
	// OverRate is OverRateDrop or OverRateDisconnect.
	OverRate string `yaml:"over_rate"`
	// MaxTopicLevels bounds the levels of a topic or filter; the hub's own
	// topics use up to 5 (devices/{id}/commands/{cid}/result).
	MaxTopicLevels int `yaml:"max_topic_levels"`
	// MaxTopicBytes bounds the length of a topic or filter.
	MaxTopicBytes int `yaml:"max_topic_bytes"`
	// ConnectTimeout is how long a new connection has for its TLS handshake
	// and CONNECT packet before it is closed.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// DefaultLimits returns the defaults: generous for real devices, tight
// enough that one misbehaving client cannot hurt the others.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections: 100_000,
		ConnectRate:    1000,
		ConnectBurst:   2000,
		MessageRate:    100,
		MessageBurst:   200,
		OverRate:       OverRateDrop,
		MaxTopicLevels: 16,
		MaxTopicBytes:  1024,
		ConnectTimeout: 10 * time.Second,
	}
}

func (l Limits) validate() error {
	var errs []error
	if l.MaxConnections < 0 || l.ConnectRate < 0 || l.ConnectBurst < 0 || l.MessageRate < 0 || l.MessageBurst < 0 {
		errs = append(errs, errors.New("mqtt limits must not be negative (0 switches a limit off)"))
	}
	if l.ConnectRate > 0 && l.ConnectBurst < 1 {
		errs = append(errs, errors.New("mqtt.connect_burst must be at least 1 when mqtt.connect_rate is set"))
	}
	if l.MessageRate > 0 && l.MessageBurst < 1 {
		errs = append(errs, errors.New("mqtt.message_burst must be at least 1 when mqtt.message_rate is set"))
	}
	if l.OverRate != OverRateDrop && l.OverRate != OverRateDisconnect {
		errs = append(errs, errors.New(`mqtt.over_rate: use "drop" or "disconnect"`))
	}
	if l.MaxTopicLevels != 0 && l.MaxTopicLevels < 5 {
		errs = append(errs, errors.New("mqtt.max_topic_levels must be at least 5, the depth of the hub's own topics (0: no limit)"))
	}
	if l.MaxTopicBytes != 0 && l.MaxTopicBytes < 256 {
		errs = append(errs, errors.New("mqtt.max_topic_bytes must be at least 256 (0: no limit)"))
	}
	if l.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("mqtt.connect_timeout must be positive"))
	}
	return errors.Join(errs...)
}

// topicLimit names the limit a topic or filter exceeds, or returns "".
func (l Limits) topicLimit(topic string) string {
	if l.MaxTopicBytes > 0 && len(topic) > l.MaxTopicBytes {
		return limitTopicBytes
	}
	if l.MaxTopicLevels > 0 && strings.Count(topic, "/")+1 > l.MaxTopicLevels {
		return limitTopicLevels
	}
	return ""
}

// tokenBucket admits events at rate per second with bursts of up to burst.
// A nil bucket admits everything. Safe for concurrent use.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// newTokenBucket returns a full bucket, or nil when rate is not positive.
func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes one token if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// limitsHook enforces the per-packet limits: message rate and topic size on
// PUBLISH, topic size on SUBSCRIBE. It runs before the ingest hook, so a
// refused publish is neither stored nor forwarded.
type limitsHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	cfg      Limits
	sessions *sessions
	m        *brokerMetrics
	warn     *warnLog
}

var _ mqtt.Hook = (*limitsHook)(nil)

func (h *limitsHook) ID() string { return "telehub-limits" }

func (h *limitsHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnSubscribe }

func (h *limitsHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	se := h.sessions.get(cl)
	if lim := h.cfg.topicLimit(pk.TopicName); lim != "" {
		h.m.limitHits[lim].Inc()
		h.warn.Warn("mqtt publish refused: topic over the "+lim+" limit", se.attrs(cl, "topic", clip(pk.TopicName))...)
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			// No negative acknowledgement in MQTT 3.1.1; mochi does the
			// same for a publish the ACL refuses.
			disconnect(h.srv, cl, packets.ErrTopicNameInvalid)
			return pk, packets.ErrRejectPacket
		}
		return pk, h.refuse(cl, pk, packets.ErrTopicNameInvalid)
	}
	if se != nil && !se.rate.allow(time.Now()) {
		h.m.limitHits[limitMessageRate].Inc()
		h.warn.Warn("mqtt publish refused: over the message rate", se.attrs(cl, "topic", clip(pk.TopicName), "action", h.cfg.OverRate)...)
		if h.cfg.OverRate == OverRateDisconnect || cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			disconnect(h.srv, cl, packets.ErrMessageRateTooHigh)
			return pk, packets.ErrRejectPacket
		}
		return pk, h.refuse(cl, pk, packets.ErrMessageRateTooHigh)
	}
	return pk, nil
}

// refuse answers a refused publish: MQTT 5 QoS 1 and 2 get the reason code
// (PUBACK, or PUBREC for QoS 2, where mochi would send a PUBACK); everything
// else gets nothing. The publish is neither stored nor forwarded.
func (h *limitsHook) refuse(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		typ := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec
		}
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID, ReasonCode: code.Code,
			Properties: packets.Properties{ReasonString: code.Reason}}
		if err := cl.WritePacket(ack); err != nil {
			h.Log.Debug("write refusal", "client", cl.ID, "err", err)
		}
	}
	return packets.ErrRejectPacket
}

// OnSubscribe turns a filter over a topic limit into an invalid one, so that
// mochi answers it with "topic filter invalid" (MQTT 3.1.1: failure).
func (h *limitsHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	copied := false
	for i, sub := range pk.Filters {
		f, _ := unshare(sub.Filter)
		lim := h.cfg.topicLimit(f)
		if lim == "" {
			continue
		}
		h.m.limitHits[lim].Inc()
		h.warn.Warn("mqtt subscribe refused: filter over the "+lim+" limit", h.sessions.get(cl).attrs(cl, "filter", clip(sub.Filter))...)
		if !copied {
			pk.Filters, copied = slices.Clone(pk.Filters), true
		}
		pk.Filters[i].Filter = ""
	}
	return pk
}

// clip shortens a client-supplied string for a log line.
func clip(s string) string {
	const n = 200
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
