package broker

import (
	"bytes"
	"math"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the limits this file enforces, in telehub_mqtt_limit_hits_total.
const (
	limitReceiveMaximum = "receive_maximum"
	limitKeepAlive      = "keep_alive"
)

// conformHook makes the broker behave as the MQTT 5 specification says
// where mochi does not by itself:
//
//   - Receive Maximum: mochi counts a QoS 1 publish as answered as soon as
//     it hands the PUBACK to the connection, which ackHold may hold for the
//     log's fsync. The client's count is what matters, so the connection
//     counts the publishes it read and the PUBACKs, PUBCOMPs and refusing
//     PUBRECs that left on the wire (ackHold.admit, ackHold.sent); an MQTT 5
//     client over the limit is disconnected with 0x93.
//   - Server Keep Alive (mqtt.server_keep_alive).
//   - Topics starting with '$' are never matched by a filter starting with
//     a wildcard: mochi keeps that rule for live messages to plain
//     subscriptions, not for shared ones nor for retained messages other
//     than $SYS ones; the ACL asks deliverable.
//   - A QoS 2 publish sent again before its PUBREL (after a reconnect) is
//     acknowledged with a PUBREC of success [MQTT-4.3.3-10], not 0x91, and
//     SUBACK and UNSUBACK do not echo the request's user properties.
//   - A publish to $SYS is answered (MQTT 5: "not authorized"; MQTT 3.1.1:
//     disconnected) instead of silently dropped.
type conformHook struct {
	mqtt.HookBase
	srv        *mqtt.Server
	receiveMax int32
	keepAlive  uint16 // seconds; 0: off
	m          *brokerMetrics
	warn       *warnLog
	hits       map[string]prometheus.Counter

	// subscribing holds the filters of the clients whose SUBSCRIBE is
	// being checked: while it is, an ACL check of one of them is of the
	// filter the client asks for, not of a message delivered to it.
	subscribing sync.Map // *mqtt.Client -> packets.Subscriptions
}

var _ mqtt.Hook = (*conformHook)(nil)

func newConformHook(srv *mqtt.Server, cfg Config, m *brokerMetrics, warn *warnLog) *conformHook {
	return &conformHook{srv: srv, receiveMax: int32(cfg.ReceiveMaximum), keepAlive: uint16(cfg.ServerKeepAlive.Seconds()),
		m: m, warn: warn, hits: m.limitHits}
}

func (h *conformHook) ID() string { return "telehub-conform" }

func (h *conformHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnSessionEstablished, mqtt.OnPacketRead,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnDisconnect, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnect applies the server keep alive: an MQTT 5 client is told to use
// it instead of its own; an MQTT 3.1.1 client cannot be told, so one whose
// keep alive is longer (or 0, none) is refused with "identifier rejected",
// as Mosquitto's max_keepalive does, rather than cut off later.
func (h *conformHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.keepAlive == 0 {
		return nil
	}
	if cl.Properties.ProtocolVersion == 5 {
		cl.State.ServerKeepalive = true
		cl.State.Keepalive = h.keepAlive
		return nil
	}
	if ka := pk.Connect.Keepalive; ka == 0 || ka > h.keepAlive {
		h.hits[limitKeepAlive].Inc()
		h.warn.Warn("mqtt connect refused: MQTT 3.1.1 keep alive over mqtt.server_keep_alive",
			"client_id", clip(cl.ID), "remote", cl.Net.Remote, "keep_alive", ka, "server_keep_alive", h.keepAlive)
		if err := h.srv.SendConnack(cl, packets.Err3ClientIdentifierNotValid, false, nil); err != nil {
			h.Log.Debug("send refusing connack", "client", cl.ID, "err", err)
		}
		return packets.ErrClientIdentifierNotValid
	}
	return nil
}

// OnSessionEstablished hands the receive maximum from mochi to the
// connection: mochi's own count is switched off (it would count a held
// PUBACK as sent), and the connection of an MQTT 5 client starts counting.
// It runs before the broker reads the client's first packet after CONNECT.
func (h *conformHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	cl.State.Inflight.ResetReceiveQuota(math.MaxInt32)
	if a, ok := cl.Net.Conn.(*ackHold); ok && cl.Properties.ProtocolVersion == 5 {
		a.countAcks()
	}
}

// OnPacketRead admits a QoS 1 or 2 publish under the receive maximum, and
// answers a publish to $SYS, which mochi drops without a word.
func (h *conformHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	if a, ok := cl.Net.Conn.(*ackHold); ok && !a.admit(h.receiveMax) {
		h.hits[limitReceiveMaximum].Inc()
		h.warn.Warn("mqtt client disconnected: more unacknowledged publishes than mqtt.receive_maximum",
			"username", clip(string(cl.Properties.Username)), "client_id", clip(cl.ID), "remote", cl.Net.Remote,
			"receive_maximum", h.receiveMax)
		a.abort(disconnectBytes(cl, packets.ErrReceiveMaximum))
		cl.Stop(packets.ErrReceiveMaximum)
		return pk, packets.ErrRejectPacket // ends the connection
	}
	if isSys(pk.TopicName) {
		h.m.aclDenied["publish"].Inc()
		h.warn.Warn("mqtt publish refused: clients may not publish to $SYS",
			"username", clip(string(cl.Properties.Username)), "client_id", clip(cl.ID), "remote", cl.Net.Remote, "topic", clip(pk.TopicName))
		refusePublish(h.srv, cl, pk, packets.ErrNotAuthorized) // mochi drops it after this hook; this answers it
	}
	return pk, nil
}

// OnPacketEncode corrects what mochi gets wrong in the acknowledgements it
// encodes:
//
//   - SUBACK and UNSUBACK carried the user properties of the SUBSCRIBE or
//     UNSUBSCRIBE (which could make them larger than the client's maximum
//     packet size, and then they were never sent);
//   - PUBREC 0x91 (packet identifier in use), which mochi sends only for a
//     QoS 2 publish whose PUBREC it sent before and whose PUBREL has not
//     come, becomes the PUBREC of success the specification asks for
//     [MQTT-4.3.3-10]: the publish was received (and is not delivered
//     again), and a client takes 0x91 as the failure of a message that
//     went through.
func (h *conformHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Suback, packets.Unsuback:
		pk.Properties.User = nil
	case packets.Pubrec:
		if pk.ReasonCode == packets.ErrPacketIdentifierInUse.Code {
			pk.ReasonCode = packets.CodeSuccess.Code
			pk.Properties = packets.Properties{}
		}
	}
	return pk
}

// disconnectBytes encodes a DISCONNECT with a reason code for an MQTT 5
// client (nothing for MQTT 3.1.1, which has no server DISCONNECT).
func disconnectBytes(cl *mqtt.Client, code packets.Code) []byte {
	if cl.Properties.ProtocolVersion != 5 {
		return nil
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 5,
		ReasonCode: code.Code, Properties: packets.Properties{ReasonString: code.Reason}}
	var b bytes.Buffer
	if err := pk.DisconnectEncode(&b); err != nil {
		return nil
	}
	return b.Bytes()
}

func (h *conformHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.subscribing.Store(cl, pk.Filters)
	return pk
}

func (h *conformHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	h.subscribing.Delete(cl)
}

func (h *conformHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.subscribing.Delete(cl) }

// deliverable reports whether a message on topic may go to cl as far as
// the '$' rule goes: a '$' topic only through a subscription that does not
// start with a wildcard [MQTT-4.7.2-1]. mochi matches live messages to
// plain subscriptions by that rule; this catches shared subscriptions and
// the retained messages sent to a new subscription. The ACL asks it for
// every check of a '$' string outside a SUBSCRIBE.
func (h *conformHook) deliverable(cl *mqtt.Client, topic string) bool {
	if topic == "" || topic[0] != '$' || cl.Net.Inline {
		return true
	}
	if subs, ok := h.subscribing.Load(cl); ok {
		for _, sub := range subs.(packets.Subscriptions) {
			if sub.Filter == topic {
				return true // a filter being subscribed to, not a delivery
			}
		}
	}
	for filter := range cl.State.Subscriptions.GetAll() {
		f, _ := unshare(filter)
		if f != "" && f[0] != '+' && f[0] != '#' && filterCovers(f, topic) {
			return true
		}
	}
	return false
}

// refusePublish answers a publish the hub refuses with code. MQTT 5: QoS 1
// gets a PUBACK and QoS 2 a PUBREC with the code and its reason string
// (mochi would answer a QoS 2 publish with a PUBACK), QoS 0 nothing.
// MQTT 3.1.1 has no negative acknowledgement and resends only after a
// reconnect, so a refused QoS 1 or 2 publish closes the connection, as
// mochi does for one the ACL refuses. It returns packets.ErrRejectPacket,
// for an OnPublish hook to return: mochi then neither stores, forwards nor
// acknowledges the publish.
func refusePublish(srv *mqtt.Server, cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion < 5 {
		disconnect(srv, cl, code)
		return packets.ErrRejectPacket
	}
	typ := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID, ReasonCode: code.Code,
		Properties: packets.Properties{ReasonString: code.Reason}}
	_ = cl.WritePacket(ack) // fails only when the connection is closing
	return packets.ErrRejectPacket
}
