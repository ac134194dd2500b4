package broker

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/testenv"
)

// controlEvents records what the control hook reports.
type controlEvents struct {
	mu         sync.Mutex
	delivered  []string
	dropped    []string
	results    map[string]devices.CommandResult
	subscribed []string
	reported   map[string]string
}

func (e *controlEvents) Delivered(_, id string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ok {
		e.delivered = append(e.delivered, id)
	} else {
		e.dropped = append(e.dropped, id)
	}
}

func (e *controlEvents) Result(_, id string, r devices.CommandResult) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results[id] = r
	return nil
}

func (e *controlEvents) Subscribed(dev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subscribed = append(e.subscribed, dev)
}

func (e *controlEvents) Reported(dev string, payload []byte, _ time.Time) error {
	if string(payload) == "bad" {
		return devices.ErrNotFound
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reported[dev] = string(payload)
	return nil
}

func (e *controlEvents) RetainedExpired(string) {}

func (e *controlEvents) snapshot() controlEvents {
	e.mu.Lock()
	defer e.mu.Unlock()
	return controlEvents{delivered: slices.Clone(e.delivered), subscribed: slices.Clone(e.subscribed)}
}

func (e *controlEvents) result(id string) (devices.CommandResult, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.results[id]
	return r, ok
}

func (e *controlEvents) report(dev string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reported[dev]
}

func newControlFixture(t *testing.T) (*fixture, *Control, *controlEvents) {
	t.Helper()
	f := newFixture(t, nil)
	ev := &controlEvents{results: map[string]devices.CommandResult{}, reported: map[string]string{}}
	c, err := NewControl(f.b, ev, ev, testenv.Logger(t))
	require.NoError(t, err)
	return f, c, ev
}

func TestControlSendsCommandsAndFollowsThem(t *testing.T) {
	f, ctl, ev := newControlFixture(t)
	tok := f.device(t, "d1")
	cmd := devices.Command{ID: "c1", DeviceID: "d1", Name: "ping", Params: []byte(`{}`), ExpiresAt: time.Now().Add(time.Minute)}
	require.ErrorIs(t, ctl.SendCommand(cmd), devices.ErrUnreachable, "offline")

	d, err := f.dial(t, "", "d1", tok, nil)
	require.NoError(t, err)
	require.ErrorIs(t, ctl.SendCommand(cmd), devices.ErrUnreachable, "online but not subscribed")
	d.subscribe(t, "devices/d1/commands/+", 1)
	testenv.Eventually(t, 5*time.Second, "subscription reported", func() bool { return slices.Contains(ev.snapshot().subscribed, "d1") })

	require.NoError(t, ctl.SendCommand(cmd))
	testenv.Eventually(t, 5*time.Second, "received", func() bool { return d.received("devices/d1/commands/c1") })
	testenv.Eventually(t, 5*time.Second, "PUBACK seen", func() bool { return slices.Equal(ev.snapshot().delivered, []string{"c1"}) })
	expired := cmd
	expired.ExpiresAt = time.Now().Add(-time.Second)
	require.ErrorIs(t, ctl.SendCommand(expired), devices.ErrUnreachable, "an expired command is not sent")

	d.publish(t, "devices/d1/commands/c1/result", 1, false, `{"status":"ok","result":{"pong":1}}`)
	testenv.Eventually(t, 5*time.Second, "result", func() bool { _, ok := ev.result("c1"); return ok })
	r, _ := ev.result("c1")
	require.True(t, r.OK)
	require.Equal(t, devices.ViaResultTopic, r.Via)

	// Bad input: an unparsable result is acknowledged (MQTT 3) and dropped.
	d.publish(t, "devices/d1/commands/c2/result", 1, false, `{"status":"maybe"}`)
	d.publish(t, "devices/d1/state", 1, true, `{"mode":"heat"}`)
	testenv.Eventually(t, 5*time.Second, "state report", func() bool { return ev.report("d1") == `{"mode":"heat"}` })
	_, ok := ev.result("c2")
	require.False(t, ok)

	// Desired state is retained for the device's next subscription.
	require.NoError(t, ctl.PublishDesired("d1", []byte(`{"version":1,"state":{}}`)))
	d.subscribe(t, "devices/d1/state/desired", 1)
	testenv.Eventually(t, 5*time.Second, "retained desired state", func() bool { return d.received("devices/d1/state/desired") })
}

// A device may not publish on the topics only the hub publishes on: an
// MQTT 3 device that tries with QoS 1 is disconnected, as for an ACL
// refusal, and nothing reaches a subscriber.
func TestControlRefusesDevicePublishesOnHubTopics(t *testing.T) {
	for _, topic := range []string{"devices/d1/commands/x", "devices/d1/state/desired"} {
		t.Run(topic, func(t *testing.T) {
			f, _, _ := newControlFixture(t)
			d, err := f.dial(t, "", "d1", f.device(t, "d1"), nil)
			require.NoError(t, err)
			d.subscribe(t, "devices/d1/#", 0)
			d.Publish(topic, 0, false, "spoof").WaitTimeout(time.Second)
			d.Publish(topic, 1, false, "spoof")
			testenv.Eventually(t, 5*time.Second, "disconnected", d.isLost)
			require.False(t, d.received(topic), "the spoofed message was not forwarded")
		})
	}
}

func TestCommandOf(t *testing.T) {
	for _, tc := range []struct {
		topic, dev, cmd string
		ok              bool
	}{
		{"devices/d1/commands/c1", "d1", "c1", true},
		{"devices/d1/commands/c1/result", "", "", false},
		{"devices/d1/commands/", "", "", false},
		{"devices/d1/state", "", "", false},
		{"other/d1/commands/c1", "", "", false},
	} {
		dev, cmd, ok := commandOf(tc.topic)
		require.Equal(t, tc.ok, ok, tc.topic)
		require.Equal(t, tc.dev, dev, tc.topic)
		require.Equal(t, tc.cmd, cmd, tc.topic)
	}
}

// TestControlRefusalsAnswerWithTheAckOfTheirQoS: a state report, result or
// response the hub refuses gets the reason in the packet of its QoS under
// MQTT 5 (PUBREC for QoS 2; mochi answered it with a PUBACK).
func TestControlRefusalsAnswerWithTheAckOfTheirQoS(t *testing.T) {
	f, _, _ := newControlFixture(t)
	tok := f.device(t, "cr")
	for _, tc := range []struct {
		topic, payload string
		want           packets.Code
	}{
		{"devices/cr/state", "bad", packets.ErrPayloadFormatInvalid},
		{"devices/cr/commands/c1/result", "not a result", packets.ErrPayloadFormatInvalid},
		{"devices/cr/responses", "{}", packets.ErrProtocolViolation},
		{"devices/cr/commands/c1", "spoof", packets.ErrNotAuthorized},
	} {
		c, _ := connectRaw(t, f.b.Addr(), 5, asDevice("cr", tok))
		for qos, typ := range map[byte]byte{1: packets.Puback, 2: packets.Pubrec} {
			c.publish(tc.topic, qos, 3, tc.payload, packets.Properties{})
			ack := c.expect(typ)
			require.Equal(t, tc.want.Code, ack.ReasonCode, "%s QoS %d", tc.topic, qos)
		}
		c.stillOpen()
	}
}
