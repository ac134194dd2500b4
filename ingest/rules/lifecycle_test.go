package rules

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
)

const hotRule = `{"id":"hot","name":"too hot","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"clear_below":26},"severity":"critical"}`

func TestFlappingIsSuppressed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.FlapThreshold, cfg.FlapWindow, cfg.FlapHold = 3, 10*time.Minute, 5*time.Minute
		h := newHarness(t, cfg)
		h.device("t1", "thermostat", nil)
		h.rule(hotRule)
		flap := func() {
			h.send("t1", "temperature", ingest.Number(30))
			h.wait(time.Minute)
			h.send("t1", "temperature", ingest.Number(20))
			h.wait(time.Minute)
		}
		flap()
		flap()
		require.Equal(t, []string{"firing", "resolved", "firing", "resolved"}, h.changes())
		// The third firing within the window marks the alert flapping: it
		// stays firing through clears shorter than the hold.
		h.send("t1", "temperature", ingest.Number(30))
		evs := h.events()
		require.Len(t, evs, 1)
		require.Equal(t, "firing", evs[0].Change)
		require.True(t, evs[0].Flapping)
		for range 5 {
			h.wait(time.Minute)
			h.send("t1", "temperature", ingest.Number(20))
			h.wait(4 * time.Minute)
			h.send("t1", "temperature", ingest.Number(30))
		}
		require.Empty(t, h.changes(), "flaps absorbed")
		require.Equal(t, StateFiring, h.state("hot", "t1"))
		h.send("t1", "temperature", ingest.Number(20))
		h.wait(5*time.Minute - time.Second)
		require.Equal(t, StateFiring, h.state("hot", "t1"))
		h.wait(time.Second)
		require.Equal(t, []string{"resolved"}, h.changes(), "resolves after the hold, without a reading")
		require.Len(t, h.e.Alerts(Filter{RuleID: "hot"}), 3, "two plain alerts and one flapping alert")
	})
}

func TestAckAndSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("t1", "thermostat", nil)
		h.rule(hotRule)
		h.rule(`{"id":"slow","name":"slow","scope":{},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"1m"}}`)
		h.send("t1", "temperature", ingest.Number(30))
		firing := h.e.Alerts(Filter{RuleID: "hot"})[0]
		pending := h.e.Alerts(Filter{RuleID: "slow"})[0]
		require.Equal(t, StatePending, pending.State)
		h.changes()

		_, err := h.e.Ack(pending.ID, "op (1)", "")
		require.ErrorIs(t, err, ErrNotFiring)
		_, err = h.e.Ack("nope", "op (1)", "")
		require.ErrorIs(t, err, ErrAlertNotFound)
		require.NoError(t, h.e.DeleteRule("slow"))
		require.Equal(t, []string{"inactive"}, h.changes())

		a, err := h.e.Ack(firing.ID, "op (1)", "on it")
		require.NoError(t, err)
		require.Equal(t, "op (1)", a.AckedBy)
		require.Equal(t, "on it", a.AckComment)
		require.Equal(t, time.Now().UTC(), *a.AckedAt)
		require.Equal(t, []string{"acknowledged"}, h.changes())
		again, err := h.e.Ack(firing.ID, "someone else (2)", "")
		require.NoError(t, err)
		require.Equal(t, "op (1)", again.AckedBy, "the first acknowledgement stands")
		require.Empty(t, h.changes())
		full, ok := h.e.Alert(firing.ID)
		require.True(t, ok)
		require.Equal(t, []string{"firing", "acknowledged"}, historyChanges(full))

		// Silence: alerts still change, marked silenced; when the silence
		// ends, what still fires is announced again.
		r, err := h.e.SilenceRule("hot", time.Now().Add(time.Hour), "op (1)")
		require.NoError(t, err)
		require.Equal(t, "op (1)", r.SilencedBy)
		h.send("t1", "temperature", ingest.Number(20))
		h.send("t1", "temperature", ingest.Number(30))
		evs := h.events()
		require.Len(t, evs, 2)
		for _, ev := range evs {
			require.True(t, ev.Silenced, ev.Change)
		}
		require.True(t, h.e.Alerts(Filter{RuleID: "hot", States: []string{StateFiring}})[0].Silenced)
		h.wait(time.Hour)
		evs = h.events()
		require.Len(t, evs, 1)
		require.Equal(t, ChangeUnsilenced, evs[0].Change)
		require.False(t, evs[0].Silenced)
		require.Nil(t, h.e.Alerts(Filter{RuleID: "hot", States: []string{StateFiring}})[0].AckedAt, "a new occurrence needs a new acknowledgement")

		// Ending a silence early announces too.
		_, err = h.e.SilenceRule("hot", time.Now().Add(time.Hour), "op (1)")
		require.NoError(t, err)
		r, err = h.e.SilenceRule("hot", time.Time{}, "op (1)")
		require.NoError(t, err)
		require.Nil(t, r.SilencedUntil)
		require.Equal(t, []string{ChangeUnsilenced}, h.changes())
	})
}

func historyChanges(a Alert) []string {
	var out []string
	for _, tr := range a.History {
		out = append(out, tr.Change)
	}
	return out
}

func TestRuleUpdateAndDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("t1", "thermostat", nil)
		r := h.rule(hotRule)
		h.send("t1", "temperature", ingest.Number(30))
		first := h.e.Alerts(Filter{RuleID: "hot"})[0]
		h.changes()

		// A new name and severity keep the alert.
		s := r.Spec
		s.Name, s.Severity = "very hot", SeverityWarning
		_, err := h.e.UpdateRule("hot", s, "admin (1)")
		require.NoError(t, err)
		require.Empty(t, h.changes())
		a, _ := h.e.Alert(first.ID)
		require.Equal(t, StateFiring, a.State)
		require.Equal(t, "very hot", a.RuleName)
		require.Equal(t, SeverityWarning, a.Severity)

		// A new threshold restarts it.
		s.Condition.Value, s.Condition.ClearBelow = 35.0, nil
		_, err = h.e.UpdateRule("hot", s, "admin (1)")
		require.NoError(t, err)
		evs := h.events()
		require.Len(t, evs, 1)
		require.Equal(t, ChangeResolved, evs[0].Change)
		require.Equal(t, "rule changed", evs[0].ResolveReason)
		h.send("t1", "temperature", ingest.Number(30))
		require.Empty(t, h.changes(), "30 is not above 35")
		h.send("t1", "temperature", ingest.Number(36))
		require.Equal(t, []string{"firing"}, h.changes())

		_, err = h.e.UpdateRule("hot", Spec{ID: "other", Name: "x", Condition: Condition{Kind: KindOffline, For: "1m"}}, "")
		require.ErrorContains(t, err, "differs")
		s.ID = ""
		_, err = h.e.UpdateRule("nope", s, "")
		require.ErrorIs(t, err, ErrNotFound)
		s.ID = "hot"
		_, err = h.e.CreateRule(s, "")
		require.ErrorIs(t, err, ErrExists)

		require.NoError(t, h.e.DeleteRule("hot"))
		evs = h.events()
		require.Len(t, evs, 1)
		require.Equal(t, "rule deleted", evs[0].ResolveReason)
		require.ErrorIs(t, h.e.DeleteRule("hot"), ErrNotFound)
		h.send("t1", "temperature", ingest.Number(40))
		require.Empty(t, h.changes())
		require.Empty(t, h.e.Rules())
	})
}

// TestRestartKeepsState: firing and pending alerts, acknowledgements, the
// history and silences survive a restart; a pending alert fires on time.
func TestRestartKeepsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("t1", "thermostat", nil)
		h.device("t2", "thermostat", nil)
		h.rule(hotRule)
		h.rule(`{"id":"slow","name":"slow","scope":{"device":"t2"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"10m"}}`)
		h.rule(`{"id":"quiet","name":"quiet","scope":{"device":"t1"},"condition":{"kind":"absence","for":"1m"}}`)
		h.send("t1", "temperature", ingest.Number(20))
		h.send("t1", "temperature", ingest.Number(30))
		h.send("t1", "temperature", ingest.Number(20))
		h.send("t1", "temperature", ingest.Number(30))
		hot := h.e.Alerts(Filter{RuleID: "hot", States: []string{StateFiring}})[0]
		_, err := h.e.Ack(hot.ID, "op (1)", "")
		require.NoError(t, err)
		h.send("t2", "temperature", ingest.Number(30))
		h.wait(2 * time.Minute)
		require.Equal(t, StateFiring, h.state("quiet", "t1"))
		_, err = h.e.SilenceRule("quiet", time.Now().Add(time.Hour), "op (1)")
		require.NoError(t, err)

		h = h.reopen(testConfig())
		require.Len(t, h.e.Rules(), 3)
		got, ok := h.e.Alert(hot.ID)
		require.True(t, ok)
		require.Equal(t, StateFiring, got.State)
		require.Equal(t, "op (1)", got.AckedBy)
		require.Len(t, h.e.Alerts(Filter{RuleID: "hot", DeviceID: "t1"}), 2, "the resolved first occurrence is history")
		require.Equal(t, StatePending, h.state("slow", "t2"))
		require.Equal(t, StateFiring, h.state("quiet", "t1"))
		require.True(t, h.e.Alerts(Filter{RuleID: "quiet"})[0].Silenced)
		require.Empty(t, h.changes(), "a restart by itself changes nothing")

		// The pending alert fires 10m after it started, not after the restart.
		h.wait(8 * time.Minute)
		require.Equal(t, []string{"firing"}, h.changes())
		// Hysteresis still applies to the restored alert.
		h.send("t1", "temperature", ingest.Number(27))
		require.Equal(t, StateFiring, h.state("hot", "t1"))
		h.send("t1", "temperature", ingest.Number(25))
		require.Equal(t, StateResolved, h.state("hot", "t1"))
		require.Equal(t, StateResolved, h.state("quiet", "t1"), "a reading ends the absence")
	})
}

func TestDeclaredRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hot, err := ParseRule([]byte(hotRule))
		require.NoError(t, err)
		quiet := Spec{ID: "quiet", Name: "quiet", Condition: Condition{Kind: KindAbsence, For: "1m"}}
		h := newHarness(t, testConfig(), hot, quiet)
		h.device("t1", "thermostat", nil)
		require.Len(t, h.e.Rules(), 2)
		r, ok := h.e.Rule("hot")
		require.True(t, ok)
		require.Equal(t, SourceConfig, r.Source)
		_, err = h.e.UpdateRule("hot", hot, "")
		require.ErrorIs(t, err, ErrDeclared)
		require.ErrorIs(t, h.e.DeleteRule("hot"), ErrDeclared)
		_, err = h.e.SilenceRule("hot", time.Now().Add(time.Minute), "op")
		require.NoError(t, err, "declared rules can be silenced")

		h.send("t1", "temperature", ingest.Number(30))
		require.Equal(t, StateFiring, h.state("hot", "t1"))

		// Restart with hot changed and quiet gone: hot's alert restarts,
		// quiet is removed.
		hot.Condition.Value = 40.0
		hot.Condition.ClearBelow = ptr(38.0)
		h = h.reopen(testConfig(), hot)
		require.Len(t, h.e.Rules(), 1)
		a := h.e.Alerts(Filter{RuleID: "hot"})[0]
		require.Equal(t, StateResolved, a.State)
		require.Equal(t, "rule changed", a.ResolveReason)

		_, err = New(testConfig(), []Spec{{Name: "no id", Condition: Condition{Kind: KindOffline, For: "1m"}}}, Deps{DB: h.db})
		require.ErrorContains(t, err, "rules[0]: id: required")
	})
}

func TestHistoryIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxResolved, cfg.Retention = 3, time.Hour
		h := newHarness(t, cfg)
		h.device("t1", "thermostat", nil)
		h.rule(hotRule)
		for range 5 {
			h.send("t1", "temperature", ingest.Number(30))
			h.send("t1", "temperature", ingest.Number(20))
			h.wait(time.Second)
		}
		require.Len(t, h.e.Alerts(Filter{}), 3, "only the newest resolved alerts are kept")
		h.wait(2 * time.Hour)
		require.Empty(t, h.e.Alerts(Filter{}), "resolved alerts older than the retention are dropped")
		h = h.reopen(cfg)
		require.Empty(t, h.e.Alerts(Filter{}), "and deleted from the database")
	})
}

// TestConcurrentUse: readings from many publishers, presence changes, rule
// changes and acknowledgements at once (run with -race); afterwards there
// is at most one active alert per rule and device, and what was written to
// the database is what the engine holds.
func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	for i := range 8 {
		h.device(fmt.Sprintf("d%d", i), "thermostat", map[string]string{"room": fmt.Sprintf("r%d", i%2)})
	}
	h.rule(hotRule)
	h.rule(`{"id":"rate","name":"rate","scope":{"labels":"room=r1"},"condition":{"kind":"rate","field":"temperature","op":">","value":5,"window":"1s"}}`)
	h.rule(`{"id":"quiet","name":"quiet","scope":{},"condition":{"kind":"absence","for":"20ms"}}`)
	h.rule(`{"id":"off","name":"off","scope":{},"condition":{"kind":"offline","for":"10ms"}}`)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				dev := fmt.Sprintf("d%d", (g+i)%8)
				h.send(dev, "temperature", ingest.Number(float64(15+(i*7+g)%20)))
				if i%50 == 0 {
					h.e.PresenceChanged(devices.PresenceEvent{DeviceID: dev, Online: i%100 == 0})
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			s, _ := ParseRule([]byte(hotRule))
			s.Condition.Value = float64(27 + i%3)
			_, err := h.e.UpdateRule("hot", s, "admin")
			require.NoError(t, err)
			for _, a := range h.e.Alerts(Filter{States: []string{StateFiring}}) {
				h.e.Ack(a.ID, "op", "")
			}
		}
	})
	wg.Wait()
	active := map[string]bool{}
	for _, a := range h.e.Alerts(Filter{States: []string{StatePending, StateFiring}}) {
		k := a.RuleID + "/" + a.DeviceID
		require.False(t, active[k], "two active alerts for %s", k)
		active[k] = true
	}
	before := map[string]string{}
	for _, a := range h.e.Alerts(Filter{}) {
		before[a.ID] = a.State
	}
	require.NotEmpty(t, before)
	h = h.reopen(DefaultConfig())
	after := map[string]string{}
	for _, a := range h.e.Alerts(Filter{}) {
		after[a.ID] = a.State
	}
	for id, st := range before {
		require.Equal(t, st, after[id], "alert %s written as it was", id)
	}
}

// TestLabelChangeMovesDeviceInAndOutOfScope: a label selector follows the
// registry: a device whose labels stop matching leaves the rule (its alert
// resolves), one whose labels start matching is evaluated.
func TestLabelChangeMovesDeviceInAndOutOfScope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("t1", "thermostat", map[string]string{"room": "lab"})
		h.rule(`{"id":"lab","name":"lab hot","scope":{"labels":"room=lab"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28}}`)
		h.send("t1", "temperature", ingest.Number(30))
		require.Equal(t, StateFiring, h.state("lab", "t1"))
		kitchen := map[string]string{"room": "kitchen"}
		_, err := h.reg.Update("t1", devices.Patch{Labels: &kitchen})
		require.NoError(t, err)
		h.wait(labelRecheck)
		h.send("t1", "temperature", ingest.Number(31))
		a := h.e.Alerts(Filter{RuleID: "lab"})[0]
		require.Equal(t, StateResolved, a.State)
		require.Equal(t, "device left the rule's scope", a.ResolveReason)
		lab := map[string]string{"room": "lab"}
		_, err = h.reg.Update("t1", devices.Patch{Labels: &lab})
		require.NoError(t, err)
		h.wait(labelRecheck)
		h.send("t1", "temperature", ingest.Number(32))
		require.Equal(t, StateFiring, h.state("lab", "t1"))
	})
}

// TestQuietStatesAreNotKept: a rate rule has a state only while it holds
// (its window lives on without one), and an offline rule only while its
// device is offline or the alert lives, so that a healthy fleet costs no
// rule state; the alerts are those of the rules as before.
func TestQuietStatesAreNotKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("d1", "thermostat", nil)
		h.rule(`{"id":"rate","name":"rate","scope":{"device":"d1"},"condition":{"kind":"rate","field":"t","op":">","value":5,"window":"1m"}}`)
		h.rule(`{"id":"off","name":"off","scope":{"device":"d1"},"condition":{"kind":"offline","for":"1m"}}`)
		states := func() int {
			n := 0
			h.e.eachShard(func(sh *shard) { n += len(sh.states) })
			return n
		}
		// Without a presence, d1 starts out offline.
		require.Equal(t, 1, states())
		h.e.PresenceChanged(devices.PresenceEvent{DeviceID: "d1", Online: true, At: time.Now()})
		require.Equal(t, 0, states(), "online and quiet: no offline state")

		for range 5 {
			h.send("d1", "t", ingest.Number(20))
			h.wait(10 * time.Second)
		}
		require.Equal(t, 0, states(), "steady readings: no rate state")
		h.send("d1", "t", ingest.Number(30)) // +10 within the window
		synctest.Wait()
		require.Equal(t, StateFiring, h.state("rate", "d1"))
		require.Equal(t, 1, states())
		h.wait(2 * time.Minute)
		h.send("d1", "t", ingest.Number(30)) // the window forgot the 20s
		synctest.Wait()
		require.Equal(t, StateResolved, h.state("rate", "d1"))
		require.Equal(t, 0, states(), "resolved: the rate state is dropped")
		h.send("d1", "t", ingest.Number(36)) // the window kept the 30
		synctest.Wait()
		require.Equal(t, StateFiring, h.state("rate", "d1"), "the window outlived the state")

		h.e.PresenceChanged(devices.PresenceEvent{DeviceID: "d1", Online: false, At: time.Now()})
		h.wait(time.Minute)
		require.Equal(t, StateFiring, h.state("off", "d1"))
		h.e.PresenceChanged(devices.PresenceEvent{DeviceID: "d1", Online: true, At: time.Now()})
		synctest.Wait()
		require.Equal(t, StateResolved, h.state("off", "d1"))
		require.Equal(t, 1, states(), "back online: only the firing rate rule's state")
	})
}
