package broker

import (
	"errors"
	"io"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// Presence is what the broker reports connections to.
type Presence interface {
	Connected(id string, session any, c devices.Connection) (replaced any)
	Disconnected(id string, session any, reason string, at time.Time)
	Seen(id string, at time.Time)
}

// presenceHook reports device connections, and enforces one connection per
// device: a new connection under the same device ID (whatever its client ID)
// takes over, as a same-client-ID connection does in MQTT.
type presenceHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	presence Presence
	sessions *sessions // only devices have presence
}

var _ mqtt.Hook = (*presenceHook)(nil)

func (h *presenceHook) ID() string { return "telehub-presence" }

func (h *presenceHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

func (h *presenceHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	proto := "3.1.1"
	switch cl.Properties.ProtocolVersion {
	case 5:
		proto = "5"
	case 3:
		proto = "3.1"
	}
	id, ok := h.sessions.device(cl)
	if !ok {
		return
	}
	old := h.presence.Connected(id, cl, devices.Connection{ClientID: cl.ID, Remote: cl.Net.Remote, Protocol: proto, ConnectedAt: time.Now().UTC()})
	if prev, ok := old.(*mqtt.Client); ok && prev != cl && !prev.Closed() {
		h.Log.Info("device connected again, closing its older connection", "device_id", id, "old_client_id", prev.ID, "client_id", cl.ID)
		h.srv.DisconnectClient(prev, packets.ErrSessionTakenOver)
	}
}

func (h *presenceHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	id, ok := h.sessions.device(cl)
	if cl.Net.Inline || !ok {
		return
	}
	h.presence.Disconnected(id, cl, disconnectReason(cl, err), time.Now().UTC())
}

func disconnectReason(cl *mqtt.Client, err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "disconnected"
	case errors.As(err, &ne) && ne.Timeout():
		return "keepalive expired"
	case errors.Is(err, io.EOF):
		return "connection closed"
	}
	if cause := cl.StopCause(); cause != nil && !errors.Is(cause, err) {
		return cause.Error()
	}
	return err.Error()
}
