package broker

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// aliasHook bounds what MQTT 5 topic aliases may cost. mochi stores a
// publish's topic under its alias before any OnPublish hook runs, so the
// topic limits must act when the packet is read: a publish whose topic is
// over max_topic_bytes or max_topic_levels loses its alias there (the
// limits hook then refuses it), and an alias over topic_alias_maximum is
// counted (mochi then disconnects with "topic alias invalid"). The CONNACK
// tells MQTT 5 clients the maximum, which mochi leaves out. mochi decodes a
// topic as a string that points into the packet's buffer, so the hook
// stores a copy of the topic instead, not the packet it came in. A
// client's aliases so cost at most topic_alias_maximum x max_topic_bytes.
type aliasHook struct {
	mqtt.HookBase
	cfg  Limits
	m    *brokerMetrics
	warn *warnLog
}

var _ mqtt.Hook = (*aliasHook)(nil)

func (h *aliasHook) ID() string { return "telehub-aliases" }

func (h *aliasHook) Provides(b byte) bool { return b == mqtt.OnPacketRead || b == mqtt.OnPacketEncode }

// OnPacketRead runs on the client's read goroutine before mochi validates
// or processes the packet.
func (h *aliasHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.Properties.TopicAlias == 0 {
		return pk, nil
	}
	if pk.Properties.TopicAlias > h.cfg.TopicAliasMaximum {
		h.m.limitHits[limitTopicAlias].Inc()
		h.warn.Warn("mqtt client disconnected: topic alias over mqtt.topic_alias_maximum",
			"username", clip(string(cl.Properties.Username)), "client_id", clip(cl.ID), "remote", cl.Net.Remote,
			"alias", pk.Properties.TopicAlias, "topic_alias_maximum", h.cfg.TopicAliasMaximum)
		return pk, nil
	}
	switch {
	case pk.TopicName == "":
	case h.cfg.topicLimit(pk.TopicName) != "":
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	default:
		// mochi's topic string points into the packet's buffer: kept as
		// it is, the alias would hold the whole packet, payload and all.
		pk.TopicName = strings.Clone(pk.TopicName)
	}
	return pk, nil
}

// OnPacketEncode adds the Topic Alias Maximum to a successful MQTT 5
// CONNACK [MQTT-3.2.2.3.8].
func (h *aliasHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.TopicAliasMaximum = h.cfg.TopicAliasMaximum
	}
	return pk
}
