package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
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
	// ConnectRate bounds successful connections per second over the
	// whole broker (token bucket of ConnectBurst), a last resort against a
	// reconnect storm; failed logins do not spend it. A client over it gets
	// CONNACK "connection rate exceeded" (MQTT 3.1.1: "server unavailable").
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// ClientConnectRate bounds the successful connections per second of one
	// identity (a device, an integration; an anonymous client by its client
	// ID), token bucket of ClientConnectBurst: a device in a reconnect loop
	// is slowed down without costing the others. Refused like ConnectRate.
	ClientConnectRate  float64 `yaml:"client_connect_rate"`
	ClientConnectBurst int     `yaml:"client_connect_burst"`
	// AuthFailureRate bounds the failed logins per second from one source
	// address (token bucket of AuthFailureBurst). An address that has spent
	// its bucket is refused ("connection rate exceeded") before its
	// credentials are checked, until the bucket refills; other addresses,
	// and the successful logins' buckets, are not affected.
	AuthFailureRate  float64 `yaml:"auth_failure_rate"`
	AuthFailureBurst int     `yaml:"auth_failure_burst"`
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
	// MaxTopicBytes bounds the length of a topic or filter. A publish
	// over it is refused before its topic alias is stored (aliases.go).
	MaxTopicBytes int `yaml:"max_topic_bytes"`
	// TopicAliasMaximum is the Topic Alias Maximum the broker announces to
	// MQTT 5 clients in CONNACK and enforces: a client may hold that many
	// inbound aliases, each of at most MaxTopicBytes. 0: no aliases.
	TopicAliasMaximum uint16 `yaml:"topic_alias_maximum"`
	// MaxSubscriptionsPerClient bounds the subscriptions of one client
	// session; a filter over it gets SUBACK "quota exceeded" (0x97; MQTT
	// 3.1.1: failure, 0x80).
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// SubscribeRate bounds the SUBSCRIBE packets per second of one client
	// (token bucket of SubscribeBurst); every filter of a SUBSCRIBE over
	// the rate gets SUBACK "quota exceeded" (MQTT 3.1.1: failure).
	SubscribeRate  float64 `yaml:"subscribe_rate"`
	SubscribeBurst int     `yaml:"subscribe_burst"`
	// MaxRetainedPerClient and MaxRetainedBytesPerClient bound the
	// retained messages one identity (a device, an integration; an
	// anonymous client by its client ID) holds, by count and by bytes of
	// topic and payload (retained.go). The hub's own retained messages
	// (desired state) do not count. A retained publish over either gets
	// PUBACK "quota exceeded" (0x97) on MQTT 5; MQTT 3.1.1 has no negative
	// acknowledgement, so it is acknowledged and dropped.
	MaxRetainedPerClient      int `yaml:"max_retained_per_client"`
	MaxRetainedBytesPerClient int `yaml:"max_retained_bytes_per_client"`
	// MaxRetained and MaxRetainedBytes bound the retained messages of all
	// clients together (the hub's own not counted), refused the same way.
	MaxRetained      int   `yaml:"max_retained"`
	MaxRetainedBytes int64 `yaml:"max_retained_bytes"`
	// ConnectTimeout is how long a new connection has for its TLS handshake
	// and CONNECT packet before it is closed.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// DefaultLimits returns the defaults: generous for real devices, tight
// enough that one misbehaving client cannot hurt the others.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:     100_000,
		ConnectRate:        1000,
		ConnectBurst:       2000,
		ClientConnectRate:  1,
		ClientConnectBurst: 10,
		AuthFailureRate:    1,
		AuthFailureBurst:   20,
		MessageRate:        100,
		MessageBurst:       200,
		OverRate:           OverRateDrop,
		MaxTopicLevels:     16,
		MaxTopicBytes:      1024,
		TopicAliasMaximum:  16,

		MaxSubscriptionsPerClient: 100,
		SubscribeRate:             10,
		SubscribeBurst:            100,
		MaxRetainedPerClient:      100,
		MaxRetainedBytesPerClient: 1 << 20,
		MaxRetained:               100_000,
		MaxRetainedBytes:          64 << 20,
		ConnectTimeout:            10 * time.Second,
	}
}

func (l Limits) validate() error {
	var errs []error
	if min(l.MaxConnections, l.ConnectBurst, l.ClientConnectBurst, l.AuthFailureBurst, l.MessageBurst, l.SubscribeBurst,
		l.MaxSubscriptionsPerClient, l.MaxRetainedPerClient, l.MaxRetainedBytesPerClient, l.MaxRetained) < 0 ||
		min(l.ConnectRate, l.ClientConnectRate, l.AuthFailureRate, l.MessageRate, l.SubscribeRate) < 0 || l.MaxRetainedBytes < 0 {
		errs = append(errs, errors.New("mqtt limits must not be negative (0 switches a limit off)"))
	}
	for _, b := range []struct {
		rate  float64
		burst int
		name  string
	}{
		{l.ConnectRate, l.ConnectBurst, "connect"},
		{l.ClientConnectRate, l.ClientConnectBurst, "client_connect"},
		{l.AuthFailureRate, l.AuthFailureBurst, "auth_failure"},
		{l.MessageRate, l.MessageBurst, "message"},
		{l.SubscribeRate, l.SubscribeBurst, "subscribe"},
	} {
		if b.rate > 0 && b.burst < 1 {
			errs = append(errs, fmt.Errorf("mqtt.%s_burst must be at least 1 when mqtt.%s_rate is set", b.name, b.name))
		}
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

// limitsHook enforces the per-packet limits: message rate and topic size on
// PUBLISH; topic size, the subscription count and the SUBSCRIBE rate on
// SUBSCRIBE. It runs before the ingest hook, so a refused publish is
// neither stored nor forwarded.
type limitsHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	cfg      Limits
	sessions *sessions
	m        *brokerMetrics
	warn     *warnLog

	// quota holds, between OnSubscribe and OnSubscribed of one SUBSCRIBE
	// (both on the client's read goroutine), the indexes of the filters
	// refused for a quota: *mqtt.Client -> []int.
	quota sync.Map
}

var _ mqtt.Hook = (*limitsHook)(nil)

func (h *limitsHook) ID() string { return "telehub-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSubscribe || b == mqtt.OnSubscribed
}

// OnPublish charges every publish to the client's message rate, refused
// ones included (a publish the ACL refuses is charged in accessHook), then
// refuses a topic over a limit or an alias that names no topic.
func (h *limitsHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	se := h.sessions.get(cl)
	if se != nil && !allow(se.rate) {
		h.m.limitHits[limitMessageRate].Inc()
		h.warn.Warn("mqtt publish refused: over the message rate", se.attrs(cl, "topic", clip(pk.TopicName), "action", h.cfg.OverRate)...)
		if h.cfg.OverRate == OverRateDisconnect || cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			disconnect(h.srv, cl, packets.ErrMessageRateTooHigh)
			return pk, packets.ErrRejectPacket
		}
		return pk, refusePublish(h.srv, cl, pk, packets.ErrMessageRateTooHigh)
	}
	if pk.TopicName == "" {
		// A topic alias the client never set (or whose topic was refused,
		// aliases.go): a protocol error [MQTT-3.3.2-7].
		h.m.limitHits[limitTopicAlias].Inc()
		h.warn.Warn("mqtt publish refused: topic alias with no topic", se.attrs(cl, "alias", pk.Properties.TopicAlias)...)
		disconnect(h.srv, cl, packets.ErrTopicAliasInvalid)
		return pk, packets.ErrRejectPacket
	}
	if lim := h.cfg.topicLimit(pk.TopicName); lim != "" {
		h.m.limitHits[lim].Inc()
		h.warn.Warn("mqtt publish refused: topic over the "+lim+" limit", se.attrs(cl, "topic", clip(pk.TopicName))...)
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			// No negative acknowledgement in MQTT 3.1.1; mochi does the
			// same for a publish the ACL refuses.
			disconnect(h.srv, cl, packets.ErrTopicNameInvalid)
			return pk, packets.ErrRejectPacket
		}
		return pk, refusePublish(h.srv, cl, pk, packets.ErrTopicNameInvalid)
	}
	return pk, nil
}

// allow takes a token from l; a nil l is no limit.
func allow(l *rate.Limiter) bool { return l == nil || l.Allow() }

// OnSubscribe refuses the filters over a topic limit, all filters of a
// SUBSCRIBE over the client's subscribe rate, and the new filters past
// max_subscriptions_per_client. A refused filter is made invalid, so mochi
// neither subscribes it nor sends retained messages for it; OnSubscribed
// then turns the code of a quota refusal into "quota exceeded".
func (h *limitsHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	se := h.sessions.get(cl)
	pk.Filters = slices.Clone(pk.Filters) // mochi's packet is not ours to edit
	var quota []int
	if se != nil && !allow(se.subscribes) {
		h.m.limitHits[limitSubscribeRate].Add(float64(len(pk.Filters)))
		h.warn.Warn("mqtt subscribe refused: over the subscribe rate", se.attrs(cl, "filters", len(pk.Filters))...)
		for i := range pk.Filters {
			pk.Filters[i].Filter = ""
			quota = append(quota, i)
		}
		h.quota.Store(cl, quota)
		return pk
	}
	room := -1 // no limit
	if h.cfg.MaxSubscriptionsPerClient > 0 {
		room = h.cfg.MaxSubscriptionsPerClient - cl.State.Subscriptions.Len()
	}
	seen := map[string]bool{}
	for i, sub := range pk.Filters {
		f, _ := unshare(sub.Filter)
		if lim := h.cfg.topicLimit(f); lim != "" {
			h.m.limitHits[lim].Inc()
			h.warn.Warn("mqtt subscribe refused: filter over the "+lim+" limit", se.attrs(cl, "filter", clip(sub.Filter))...)
			pk.Filters[i].Filter = ""
			continue
		}
		if _, ok := cl.State.Subscriptions.Get(sub.Filter); ok || seen[sub.Filter] || room < 0 {
			continue // replaces a subscription: costs nothing more
		}
		if room == 0 {
			h.m.limitHits[limitSubscriptions].Inc()
			h.warn.Warn("mqtt subscribe refused: over max_subscriptions_per_client",
				se.attrs(cl, "filter", clip(sub.Filter), "max_subscriptions_per_client", h.cfg.MaxSubscriptionsPerClient)...)
			pk.Filters[i].Filter = ""
			quota = append(quota, i)
			continue
		}
		seen[sub.Filter] = true
		room--
	}
	for i := range pk.Filters {
		// mochi's filter string points into the packet's buffer: kept as it
		// is, each subscription would hold its whole SUBSCRIBE packet.
		pk.Filters[i].Filter = strings.Clone(pk.Filters[i].Filter)
	}
	if quota != nil {
		h.quota.Store(cl, quota)
	}
	return pk
}

// OnSubscribed gives the filters OnSubscribe refused for a quota the code
// "quota exceeded" (0x97) for MQTT 5; mochi writes the SUBACK with the codes
// it passes here. MQTT 3.1.1 has a single failure code, 0x80, which mochi
// already set.
func (h *limitsHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, codes []byte) {
	v, ok := h.quota.LoadAndDelete(cl)
	if !ok || cl.Properties.ProtocolVersion < 5 {
		return
	}
	for _, i := range v.([]int) {
		if i < len(codes) {
			codes[i] = packets.ErrQuotaExceeded.Code
		}
	}
}

// clip shortens a client-supplied string for a log line.
func clip(s string) string {
	const n = 200
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
