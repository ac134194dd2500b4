package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/ingest"
)

// Authentication (device ID + token, client certificates, integrations,
// anonymous clients) and the ACL that confines a device to devices/{its
// id}/ are in access.go.

// DeviceOwns reports whether a topic or filter lies under devices/{id}/.
// Device IDs cannot contain wildcards, so a literal prefix test is enough.
func DeviceOwns(id, topic string) bool {
	return id != "" && len(topic) > len("devices/")+len(id)+1 &&
		strings.HasPrefix(topic, "devices/") && strings.HasPrefix(topic[len("devices/"):], id) &&
		topic[len("devices/")+len(id)] == '/'
}

// ingestHook hands telemetry to the ingest pipeline. It runs on the
// publishing client's goroutine and returns once the readings are durable, so
// the PUBACK mochi sends afterwards means "on disk".
type ingestHook struct {
	mqtt.HookBase
	ctx      context.Context
	reg      Registry
	ing      Ingester
	presence Presence
	sessions *sessions
	log      *slog.Logger
}

var _ mqtt.Hook = (*ingestHook)(nil)

func (h *ingestHook) ID() string { return "telehub-ingest" }

func (h *ingestHook) Provides(b byte) bool { return b == mqtt.OnPublish }

var senmlType = []byte("application/senml+json")

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	id, rest, ok := SplitDeviceTopic(pk.TopicName)
	if dev, isDevice := h.sessions.device(cl); !ok || !isDevice || id != dev {
		return pk, nil
	}
	h.presence.Seen(id, time.Now())
	if rest != "telemetry" {
		return pk, nil
	}
	dev, ok := h.reg.Get(id)
	if !ok {
		return pk, packets.ErrRejectPacket // deleted while connected
	}
	f := ingest.FormatAuto
	if bytes.EqualFold([]byte(pk.Properties.ContentType), senmlType) {
		f = ingest.FormatSenML
	}
	ingestFn := h.ing.Ingest
	if pk.FixedHeader.Qos == 0 {
		ingestFn = h.ing.IngestNoWait // nothing to acknowledge: do not wait for the fsync
	}
	_, err := ingestFn(h.ctx, ingest.Device{ID: dev.ID, Type: dev.Type}, pk.Payload, f)
	if err == nil {
		return pk, nil
	}
	v5 := cl.Properties.ProtocolVersion == 5
	var de *ingest.DecodeError
	switch {
	case errors.As(err, &de):
		// Acknowledged (there is nothing better to say to an MQTT 3 device),
		// not stored, not forwarded. MQTT 5 devices get the reason code.
		if v5 && pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrPayloadFormatInvalid
		}
		return pk, packets.CodeSuccessIgnore
	case errors.Is(err, ingest.ErrBackpressure):
		if v5 && pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrQuotaExceeded
		}
		if pk.FixedHeader.Qos > 0 {
			// MQTT 3 has no negative PUBACK and resends only on reconnect:
			// close the connection so the device backs off and resends.
			h.log.Warn("durable log full, disconnecting device to push back", "device_id", id)
			cl.Stop(packets.ErrServerBusy)
		}
		return pk, packets.ErrRejectPacket
	default:
		if v5 && pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrUnspecifiedError
		}
		if pk.FixedHeader.Qos > 0 {
			// As for backpressure: no PUBACK, and a reconnect makes the
			// MQTT 3 device resend.
			cl.Stop(packets.ErrUnspecifiedError)
		}
		return pk, packets.ErrRejectPacket
	}
}

// SplitDeviceTopic splits devices/{id}/{rest} into id and rest.
func SplitDeviceTopic(topic string) (id, rest string, ok bool) {
	after, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", "", false
	}
	id, rest, found = strings.Cut(after, "/")
	if !found || id == "" || rest == "" {
		return "", "", false
	}
	return id, rest, true
}
