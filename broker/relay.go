package broker

import (
	"context"
	"errors"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices/topics"
	"github.com/telehub/telehub/ingest"
)

// relayHook takes the telemetry that an integration publishes on behalf of
// a device: an edge Telehub forwarding its devices' readings upstream, a
// gateway or a bridge. The ACL has already allowed the topic (the
// integration's publish filters cover devices/{id}/telemetry), so the
// readings of a device registered here feed the pipeline as if the device
// had sent them, and the PUBACK still means "on disk".
//
// Telemetry of a device this hub does not know is acknowledged and dropped
// with a warning: a forwarder sends in order and would otherwise resend it
// forever, holding back every reading behind it.
type relayHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	ctx      context.Context
	reg      Registry
	ing      Ingester
	sessions *sessions
	warn     *warnLog
}

var _ mqtt.Hook = (*relayHook)(nil)

func (h *relayHook) ID() string { return "telehub-relay" }

func (h *relayHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *relayHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	id, rest, ok := topics.Split(pk.TopicName)
	if !ok || rest != topics.RestTelemetry {
		return pk, nil
	}
	se := h.sessions.get(cl)
	if se == nil || se.who.kind != KindIntegration {
		return pk, nil
	}
	dev, ok := h.reg.Get(id)
	if !ok {
		h.warn.Warn("relayed telemetry of a device this hub does not know dropped: register it here too",
			se.who.attrs(cl, "device_id", clip(id))...)
		return pk, packets.CodeSuccessIgnore
	}
	f := ingest.FormatAuto
	if strings.EqualFold(pk.Properties.ContentType, senmlType) {
		f = ingest.FormatSenML
	}
	err := ingestPublish(h.ctx, h.ing, cl, pk, ingest.Device{ID: dev.ID, Type: dev.Type}, f)
	if err == nil {
		return pk, nil
	}
	var de *ingest.DecodeError
	switch {
	case errors.As(err, &de):
		h.warn.Warn("relayed telemetry does not decode, dropped", se.who.attrs(cl, "device_id", id, "err", err)...)
	case errors.Is(err, ingest.ErrBackpressure):
		h.warn.Warn("durable log refuses telemetry, pushing back on a relaying integration", se.who.attrs(cl, "err", err)...)
	}
	return pk, ingestRefusal(h.srv, cl, pk, err)
}
