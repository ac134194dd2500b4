package broker

import (
	"context"
	"errors"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices/topics"
	"github.com/telehub/telehub/ingest"
)

// Authentication (device ID + token, client certificates, integrations,
// anonymous clients) and the ACL that confines a device to devices/{its
// id}/ are in access.go.

// ingestHook hands telemetry to the ingest pipeline. It runs on the
// publishing client's goroutine and returns once the readings are durable, so
// the PUBACK mochi sends afterwards means "on disk".
type ingestHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	ctx      context.Context
	reg      Registry
	ing      Ingester
	presence Presence
	sessions *sessions
	warn     *warnLog // rate-limited: a flood must not flood the log
}

var _ mqtt.Hook = (*ingestHook)(nil)

func (h *ingestHook) ID() string { return "telehub-ingest" }

func (h *ingestHook) Provides(b byte) bool { return b == mqtt.OnPublish }

const senmlType = "application/senml+json"

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	id, rest, ok := topics.Split(pk.TopicName)
	if dev, isDevice := h.sessions.device(cl); !ok || !isDevice || id != dev {
		return pk, nil
	}
	h.presence.Seen(id, time.Now())
	if rest != topics.RestTelemetry {
		return pk, nil
	}
	dev, ok := h.reg.Get(id)
	if !ok {
		return pk, refusePublish(h.srv, cl, pk, packets.ErrNotAuthorized) // deleted while connected
	}
	f := ingest.FormatAuto
	if strings.EqualFold(pk.Properties.ContentType, senmlType) {
		f = ingest.FormatSenML
	}
	err := ingestPublish(h.ctx, h.ing, cl, pk, ingest.Device{ID: dev.ID, Type: dev.Type}, f)
	if err == nil {
		return pk, nil
	}
	if errors.Is(err, ingest.ErrBackpressure) {
		h.warn.Warn("durable log refuses telemetry, pushing back on the device", "device_id", id, "err", err)
	}
	return pk, ingestRefusal(h.srv, cl, pk, err)
}

// ingestPublish hands a publish's payload to the pipeline. QoS 0 does not
// wait for the log's fsync (nothing is acknowledged). For QoS 1 and 2 the
// client's connection holds its acknowledgement back until the readings
// are durable (ackHold), so the read goroutine goes on to the next publish;
// on a connection without an ackHold it waits here.
func ingestPublish(ctx context.Context, ing Ingester, cl *mqtt.Client, pk packets.Packet, dev ingest.Device, f ingest.Format) error {
	if pk.FixedHeader.Qos == 0 {
		_, err := ing.IngestNoWait(ctx, dev, pk.Payload, f)
		return err
	}
	a, ok := cl.Net.Conn.(*ackHold)
	if !ok {
		_, err := ing.Ingest(ctx, dev, pk.Payload, f)
		return err
	}
	_, c, err := ing.IngestAsync(ctx, dev, pk.Payload, f)
	if err != nil {
		return err
	}
	return a.hold(c)
}

// ingestRefusal answers a publish the pipeline refused. A payload that does
// not decode, or that would give its device too many distinct fields, is
// acknowledged and dropped (there is nothing better to say to an MQTT 3
// client; MQTT 5 gets 0x99 or 0x97), since a resend would fail again. A
// full or failing log is not acknowledged: MQTT 5 gets 0x97 or 0x80; an
// MQTT 3 QoS 1 or 2 sender is disconnected, because MQTT 3 resends only
// after a reconnect.
func ingestRefusal(srv *mqtt.Server, cl *mqtt.Client, pk packets.Packet, err error) error {
	var de *ingest.DecodeError
	code := packets.ErrUnspecifiedError
	switch {
	case errors.As(err, &de), errors.Is(err, ingest.ErrTooManyFields):
		if cl.Properties.ProtocolVersion < 5 {
			return packets.CodeSuccessIgnore
		}
		code = packets.ErrPayloadFormatInvalid
		if de == nil {
			code = packets.ErrQuotaExceeded // an administratively imposed limit
		}
	case errors.Is(err, ingest.ErrBackpressure):
		code = packets.ErrQuotaExceeded
	}
	if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
		code = packets.ErrServerBusy
	}
	return refusePublish(srv, cl, pk, code)
}
