package broker

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/control"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// controlEvents records what the control hook reports.
type controlEvents struct {
	mu         sync.Mutex
	delivered  []string
	dropped    []string
	results    map[string]control.CommandResult
	subscribed []string
	reported   map[string]string
	// gated makes Result and Reported return commits that complete when
	// the test calls the completions in done (as the state database's
	// transaction would).
	gated bool
	done  []func(error)
}

// commit returns what Result and Reported return; e.mu is held.
func (e *controlEvents) commit() wal.Commit {
	if !e.gated {
		return wal.Commit{}
	}
	c, complete := wal.NewCommit()
	e.done = append(e.done, complete)
	return c
}

// complete completes the commits handed out so far.
func (e *controlEvents) complete(err error) {
	e.mu.Lock()
	done := e.done
	e.done = nil
	e.mu.Unlock()
	for _, fn := range done {
		fn(err)
	}
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

func (e *controlEvents) Result(_, id string, r control.CommandResult) (wal.Commit, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results[id] = r
	return e.commit(), nil
}

func (e *controlEvents) Subscribed(dev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subscribed = append(e.subscribed, dev)
}

func (e *controlEvents) Reported(dev string, payload []byte, _ time.Time) (wal.Commit, error) {
	if string(payload) == "bad" {
		return wal.Commit{}, devices.ErrNotFound
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reported[dev] = string(payload)
	return e.commit(), nil
}

func (e *controlEvents) RetainedExpired(string) {}

func (e *controlEvents) snapshot() controlEvents {
	e.mu.Lock()
	defer e.mu.Unlock()
	return controlEvents{delivered: slices.Clone(e.delivered), subscribed: slices.Clone(e.subscribed)}
}

func (e *controlEvents) result(id string) (control.CommandResult, bool) {
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
	ev := &controlEvents{results: map[string]control.CommandResult{}, reported: map[string]string{}}
	c, err := NewControl(f.b, ev, ev, testenv.Logger(t))
	require.NoError(t, err)
	return f, c, ev
}

func TestControlSendsCommandsAndFollowsThem(t *testing.T) {
	f, ctl, ev := newControlFixture(t)
	tok := f.device(t, "d1")
	cmd := control.Command{ID: "c1", DeviceID: "d1", Name: "ping", Params: []byte(`{}`), ExpiresAt: time.Now().Add(time.Minute)}
	require.ErrorIs(t, ctl.SendCommand(cmd), control.ErrUnreachable, "offline")

	d, err := f.dial(t, "", "d1", tok, nil)
	require.NoError(t, err)
	require.ErrorIs(t, ctl.SendCommand(cmd), control.ErrUnreachable, "online but not subscribed")
	d.subscribe(t, "devices/d1/commands/+", 1)
	testenv.Eventually(t, 5*time.Second, "subscription reported", func() bool { return slices.Contains(ev.snapshot().subscribed, "d1") })

	require.NoError(t, ctl.SendCommand(cmd))
	testenv.Eventually(t, 5*time.Second, "received", func() bool { return d.received("devices/d1/commands/c1") })
	testenv.Eventually(t, 5*time.Second, "PUBACK seen", func() bool { return slices.Equal(ev.snapshot().delivered, []string{"c1"}) })
	expired := cmd
	expired.ExpiresAt = time.Now().Add(-time.Second)
	require.ErrorIs(t, ctl.SendCommand(expired), control.ErrUnreachable, "an expired command is not sent")

	d.publish(t, "devices/d1/commands/c1/result", 1, false, `{"status":"ok","result":{"pong":1}}`)
	testenv.Eventually(t, 5*time.Second, "result", func() bool { _, ok := ev.result("c1"); return ok })
	r, _ := ev.result("c1")
	require.True(t, r.OK)
	require.Equal(t, control.ViaResultTopic, r.Via)

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

// TestControlAcknowledgesAnswersOnceStored: the PUBACK of a command result
// and of a state report leaves only once the command service's or the
// state's commit completes (their bbolt transaction); a failed commit is
// not acknowledged, and an MQTT 3 device is disconnected to send it again.
func TestControlAcknowledgesAnswersOnceStored(t *testing.T) {
	for _, tc := range []struct{ name, topic, payload string }{
		{"result", "devices/d1/commands/c1/result", `{"status":"ok"}`},
		{"state", "devices/d1/state", `{"mode":"heat"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _, ev := newControlFixture(t)
			ev.gated = true
			d, err := f.dial(t, "", "d1", f.device(t, "d1"), nil)
			require.NoError(t, err)
			tok := d.Publish(tc.topic, 1, false, tc.payload)
			testenv.Eventually(t, 5*time.Second, "handed over", func() bool {
				ev.mu.Lock()
				defer ev.mu.Unlock()
				return len(ev.done) == 1
			})
			require.False(t, tok.WaitTimeout(200*time.Millisecond), "no PUBACK before the commit")
			ev.complete(nil)
			require.True(t, tok.WaitTimeout(5*time.Second), "PUBACK once committed")
			require.NoError(t, tok.Error())

			tok = d.Publish(tc.topic, 1, false, tc.payload)
			testenv.Eventually(t, 5*time.Second, "handed over", func() bool {
				ev.mu.Lock()
				defer ev.mu.Unlock()
				return len(ev.done) == 1
			})
			ev.complete(errors.New("disk full"))
			testenv.Eventually(t, 5*time.Second, "disconnected, so the device sends it again", d.isLost)
			require.True(t, tok.WaitTimeout(5*time.Second))
			require.Error(t, tok.Error(), "never acknowledged")
		})
	}
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
