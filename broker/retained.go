package broker

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainHook bounds the retained messages each client identity holds, and
// all clients together: mochi keeps every retained message in memory until
// it is cleared or expires. It checks a retained publish against the quotas
// before mochi stores it, and keeps the accounting from what mochi actually
// retained (OnRetainMessage, OnRetainedExpired). The hub's own retained
// messages (desired state, published by the inline client) belong to no
// client and count against no quota. Safe for concurrent use.
//
// The check and the store are two steps: two retained publishes of one
// identity on two connections at once may both pass, so an identity may
// exceed its quota by one message per concurrent connection.
type retainHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	cfg      Limits
	sessions *sessions
	m        *brokerMetrics
	warn     *warnLog

	mu     sync.Mutex
	topics map[string]retainEntry // retained topic -> who retained it
	owners map[string]*retainUse  // owner -> what it holds
	total  retainUse              // all clients' (not the hub's)
}

// retainEntry is who holds a retained message and what it costs.
type retainEntry struct {
	owner string // "" for the hub itself
	bytes int64
}

// retainUse is what an owner holds.
type retainUse struct {
	count int
	bytes int64
}

var _ mqtt.Hook = (*retainHook)(nil)

func newRetainHook(srv *mqtt.Server, cfg Limits, ss *sessions, m *brokerMetrics, warn *warnLog) *retainHook {
	return &retainHook{srv: srv, cfg: cfg, sessions: ss, m: m, warn: warn,
		topics: map[string]retainEntry{}, owners: map[string]*retainUse{}}
}

func (h *retainHook) ID() string { return "telehub-retained" }

func (h *retainHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWill, mqtt.OnRetainMessage, mqtt.OnRetainedExpired:
		return true
	}
	return false
}

// owner is the quota a client's retained messages count against: its
// identity, or its client ID for an anonymous client; "" for the hub.
func (h *retainHook) owner(cl *mqtt.Client) string {
	if cl.Net.Inline {
		return ""
	}
	se := h.sessions.get(cl)
	if se == nil {
		return "client:" + cl.ID
	}
	return ownerOf(se.who, cl.ID)
}

// ownerOf is the owner key of an identity.
func ownerOf(who identity, clientID string) string {
	if who.kind == KindAnonymous {
		return "anonymous:" + clientID
	}
	return who.kind.String() + ":" + who.name
}

// retainCost is what a retained message counts for: its topic and payload.
func retainCost(topic string, payload []byte) int64 { return int64(len(topic) + len(payload)) }

// over names the quota that retaining cost bytes on topic would exceed
// for owner, or returns "".
func (h *retainHook) over(owner, topic string, cost int64) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var u retainUse
	if p := h.owners[owner]; p != nil {
		u = *p
	}
	t := h.total
	old, exists := h.topics[topic]
	switch {
	case exists && old.owner == owner: // a replacement
		u.bytes -= old.bytes
		t.bytes -= old.bytes
	case exists && old.owner != "": // taken over from another client
		u.count++
		t.bytes -= old.bytes
	default:
		u.count++
		t.count++
	}
	u.bytes += cost
	t.bytes += cost
	switch {
	case h.cfg.MaxRetainedPerClient > 0 && u.count > h.cfg.MaxRetainedPerClient:
		return limitRetained
	case h.cfg.MaxRetainedBytesPerClient > 0 && u.bytes > int64(h.cfg.MaxRetainedBytesPerClient):
		return limitRetainedBytes
	case h.cfg.MaxRetained > 0 && t.count > h.cfg.MaxRetained,
		h.cfg.MaxRetainedBytes > 0 && t.bytes > h.cfg.MaxRetainedBytes:
		return limitRetainedTotal
	}
	return ""
}

// OnPublish refuses a retained message over a quota: MQTT 5 QoS 1 and 2
// get "quota exceeded" (0x97); MQTT 3.1.1 QoS 1 and 2 are acknowledged and
// dropped, since a resend would be refused again; QoS 0 is dropped. The
// message is neither retained nor forwarded. Clearing a retained message
// (an empty payload) is always allowed.
func (h *retainHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 || cl.Net.Inline {
		return pk, nil
	}
	lim := h.over(h.owner(cl), pk.TopicName, retainCost(pk.TopicName, pk.Payload))
	if lim == "" {
		// mochi copies the payload it retains but not the topic, a string
		// pointing into the packet's buffer: retained as it is, it would
		// hold the whole packet too, doubling the cost.
		pk.TopicName = strings.Clone(pk.TopicName)
		return pk, nil
	}
	h.m.limitHits[lim].Inc()
	h.warn.Warn("mqtt retained publish refused: over the "+lim+" quota", h.sessions.get(cl).attrs(cl, "topic", clip(pk.TopicName))...)
	if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, refusePublish(h.srv, cl, pk, packets.ErrQuotaExceeded)
}

// OnWill keeps a will over a quota from being retained; it is still sent.
func (h *retainHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if !will.Retain || len(will.Payload) == 0 || cl.Net.Inline {
		return will, nil
	}
	if lim := h.over(h.owner(cl), will.TopicName, retainCost(will.TopicName, will.Payload)); lim != "" {
		h.m.limitHits[lim].Inc()
		h.warn.Warn("mqtt will not retained: over the "+lim+" quota", h.sessions.get(cl).attrs(cl, "topic", clip(will.TopicName))...)
		will.Retain = false
	}
	return will, nil
}

// OnRetainMessage accounts for what mochi retained or cleared.
func (h *retainHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	owner := h.owner(cl)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.release(pk.TopicName)
	if len(pk.Payload) == 0 {
		return
	}
	e := retainEntry{owner: owner, bytes: retainCost(pk.TopicName, pk.Payload)}
	h.topics[pk.TopicName] = e
	if owner == "" {
		return
	}
	u := h.owners[owner]
	if u == nil {
		u = &retainUse{}
		h.owners[owner] = u
	}
	u.count++
	u.bytes += e.bytes
	h.total.count++
	h.total.bytes += e.bytes
}

// OnRetainedExpired releases an expired retained message.
func (h *retainHook) OnRetainedExpired(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.release(topic)
}

// release drops topic's entry from the accounting. h.mu is held.
func (h *retainHook) release(topic string) {
	old, ok := h.topics[topic]
	if !ok {
		return
	}
	delete(h.topics, topic)
	if old.owner == "" {
		return
	}
	if u := h.owners[old.owner]; u != nil {
		u.count--
		u.bytes -= old.bytes
		if u.count <= 0 {
			delete(h.owners, old.owner)
		}
	}
	h.total.count--
	h.total.bytes -= old.bytes
}

// drop clears the retained messages an identity holds, and their
// accounting: its credentials are gone, and whoever gets its ID next must
// not inherit its messages.
func (h *retainHook) drop(who identity) {
	owner := ownerOf(who, "")
	h.mu.Lock()
	var topics []string
	for t, e := range h.topics {
		if e.owner == owner {
			topics = append(topics, t)
			h.release(t)
		}
	}
	h.mu.Unlock()
	for _, t := range topics {
		h.srv.Topics.RetainMessage(packets.Packet{TopicName: t}) // an empty payload clears it
	}
	atomic.StoreInt64(&h.srv.Info.Retained, int64(h.srv.Topics.Retained.Len()))
}

// usage returns what all clients hold.
func (h *retainHook) usage() retainUse {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

// held returns what owner holds.
func (h *retainHook) held(owner string) retainUse {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.owners[owner]; u != nil {
		return *u
	}
	return retainUse{}
}
