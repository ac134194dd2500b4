package broker

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestDeletedDeviceSessionNotInherited: a deleted device's persistent
// session, with the command still in flight to it, ends with the device;
// another client that later connects with the same client ID gets a new
// session and none of the deleted device's messages.
func TestDeletedDeviceSessionNotInherited(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "gone")
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }
	dev, err := f.dial(t, "shared-id", "gone", tok, persistent)
	require.NoError(t, err)
	require.Equal(t, byte(1), dev.subscribe(t, "devices/gone/commands/+", 1))
	dev.Disconnect(100)
	testenv.Eventually(t, 5*time.Second, "the broker saw the device go", func() bool {
		cl, ok := f.b.srv.Clients.Get("shared-id")
		return ok && cl.Closed()
	})
	ctl, err := f.dial(t, "", "ctl", f.integration(t, "ctl", []string{"devices/+/commands/+"}, nil), nil)
	require.NoError(t, err)
	ctl.publish(t, "devices/gone/commands/c1", 1, false, `{"name":"unlock","params":{"pin":"1234"}}`)
	testenv.Eventually(t, 5*time.Second, "the command is queued in the offline session", func() bool {
		cl, ok := f.b.srv.Clients.Get("shared-id")
		return ok && cl.State.Inflight.Len() == 1
	})

	require.NoError(t, f.reg.Delete("gone"))

	thiefTok := f.device(t, "thief")
	thief, err := f.dial(t, "shared-id", "thief", thiefTok, persistent)
	require.NoError(t, err)
	cl, ok := f.b.srv.Clients.Get("shared-id") // mochi hands a session over before its CONNACK
	require.True(t, ok)
	require.Zero(t, cl.State.Inflight.Len(), "the new client inherited the deleted device's command")
	require.Equal(t, byte(1), thief.subscribe(t, "devices/thief/marker", 1))
	thief.publish(t, "devices/thief/marker", 1, false, "m")
	testenv.Eventually(t, 5*time.Second, "marker", func() bool { return thief.received("devices/thief/marker") })
	for _, tp := range thief.topics() {
		require.False(t, strings.HasPrefix(tp, "devices/gone/"), "the deleted device's command reached another client: %v", thief.topics())
	}
	require.Equal(t, 1, cl.State.Subscriptions.Len(), "only the new client's own subscription")
	_, held := cl.State.Subscriptions.Get("devices/gone/commands/+")
	require.False(t, held)
}

// TestRotatedTokenEndsSession: rotating a device's token closes its
// connection and ends its persistent session (subscriptions and queued
// messages); the session table forgets it.
func TestRotatedTokenEndsSession(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "rot")
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }
	dev, err := f.dial(t, "rot-s", "rot", tok, persistent)
	require.NoError(t, err)
	require.Equal(t, byte(1), dev.subscribe(t, "devices/rot/commands/+", 1))

	_, newTok, err := f.reg.RotateToken("rot")
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "the old connection is closed", dev.isLost)
	testenv.Eventually(t, 5*time.Second, "the session is gone", func() bool {
		_, ok := f.b.srv.Clients.Get("rot-s")
		_, known := f.b.access.sessions.m.Load("rot-s")
		return !ok && !known
	})
	_, err = f.dial(t, "rot-s2", "rot", tok, nil)
	require.Error(t, err, "the old token no longer works")

	back, err := f.dial(t, "rot-s", "rot", newTok, persistent)
	require.NoError(t, err)
	ctl, err := f.dial(t, "", "ctl", f.integration(t, "ctl", []string{"devices/+/commands/+"}, nil), nil)
	require.NoError(t, err)
	ctl.publish(t, "devices/rot/commands/c1", 1, false, `{"name":"reboot"}`)
	cl, ok := f.b.srv.Clients.Get("rot-s")
	require.True(t, ok)
	require.Zero(t, cl.State.Subscriptions.Len(), "the new session starts without the old subscriptions")
	require.Empty(t, back.topics())
}
