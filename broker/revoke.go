package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// Revoking credentials. When a device is deleted or its token rotated, or
// an integration deleted, its connections are closed at once (not only at
// the next connect) and its MQTT sessions end: subscriptions, inflight and
// queued messages are dropped with them, so nothing meant for it, such as
// a command with its parameters, reaches a later client that connects with
// the same client ID. A deleted identity's retained messages go too.

// revoke ends every session of an identity; deleted also clears its
// retained messages.
func (b *Broker) revoke(who identity, deleted bool) {
	b.access.disconnectIdentity(who)
	if deleted {
		b.retained.drop(who)
	}
}

// deviceChanged follows the registry: a deleted device or a rotated token
// ends the device's sessions.
func (b *Broker) deviceChanged(c devices.Change) {
	b.revoke(identity{KindDevice, c.DeviceID}, c.Kind == devices.Deleted)
}

// disconnectIdentity closes the connections of an identity and ends its
// persistent sessions: its credentials are gone.
func (h *accessHook) disconnectIdentity(who identity) {
	var ended []*mqtt.Client
	h.sessions.m.Range(func(_, v any) bool {
		if se := v.(*session); se.who == who {
			ended = append(ended, se.cl)
		}
		return true
	})
	for _, cl := range ended {
		h.dropSession(cl)
		h.Log.Info("mqtt session ended: credentials revoked", who.attrs(cl)...)
	}
}

// dropSession closes a client's connection and ends its MQTT session with
// everything queued for it.
func (h *accessHook) dropSession(cl *mqtt.Client) {
	if !cl.Closed() {
		disconnect(h.srv, cl, packets.ErrAdministrativeAction)
	}
	h.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
		h.srv.Clients.Delete(cl.ID)
	}
	h.sessions.forget(cl)
}
