package rules

import (
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
)

// step is one moment of a condition table test: wait, then optionally send
// a value (or a presence change), then expect the alert's state and the
// changes published since the previous step.
type step struct {
	wait    time.Duration
	value   *ingest.Value
	field   string // default: the rule's field
	online  *bool
	state   string
	changes []string
}

func num(f float64) *ingest.Value { v := ingest.Number(f); return &v }
func str(s string) *ingest.Value  { v := ingest.String(s); return &v }
func boolean(b bool) *ingest.Value {
	v := ingest.Bool(b)
	return &v
}
func ptr[T any](v T) *T { return &v }

func TestConditions(t *testing.T) {
	const (
		pending  = StatePending
		firing   = StateFiring
		resolved = StateResolved
	)
	for _, tc := range []struct {
		name  string
		rule  string
		steps []step
	}{
		{
			name: "threshold fires after for, on time without a reading",
			rule: `{"id":"r","name":"hot","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"5m"}}`,
			steps: []step{
				{value: num(27), state: ""},
				{value: num(29), state: pending, changes: []string{"pending"}},
				{wait: 4*time.Minute + 59*time.Second, state: pending},
				{wait: time.Second, state: firing, changes: []string{"firing"}},
				{wait: time.Hour, value: num(30), state: firing},
				{value: num(28), state: resolved, changes: []string{"resolved"}},
			},
		},
		{
			name: "threshold pending clears before for: nothing kept",
			rule: `{"id":"r","name":"hot","scope":{},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"5m"}}`,
			steps: []step{
				{value: num(29), state: pending, changes: []string{"pending"}},
				{wait: 4 * time.Minute, value: num(27), state: "", changes: []string{"inactive"}},
				{wait: time.Hour, state: ""},
				{value: num(29), state: pending, changes: []string{"pending"}},
			},
		},
		{
			name: "hysteresis: clears only below clear_below",
			rule: `{"id":"r","name":"hot","scope":{},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"clear_below":26}}`,
			steps: []step{
				{value: num(28.5), state: firing, changes: []string{"firing"}},
				{value: num(27.9), state: firing},
				{value: num(26), state: firing},
				{value: num(28.1), state: firing},
				{value: num(25.9), state: resolved, changes: []string{"resolved"}},
				{value: num(27), state: resolved},
			},
		},
		{
			name: "hysteresis below: clears only above clear_above",
			rule: `{"id":"r","name":"cold","scope":{},"condition":{"kind":"threshold","field":"temperature","op":"<=","value":5,"clear_above":7}}`,
			steps: []step{
				{value: num(5), state: firing, changes: []string{"firing"}},
				{value: num(7), state: firing},
				{value: num(7.1), state: resolved, changes: []string{"resolved"}},
			},
		},
		{
			name: "string equality; other types and fields ignored",
			rule: `{"id":"r","name":"door","scope":{},"condition":{"kind":"threshold","field":"door","op":"==","value":"open","for":"10s"}}`,
			steps: []step{
				{value: num(1), state: ""},
				{value: str("open"), field: "window", state: ""},
				{value: str("open"), state: pending, changes: []string{"pending"}},
				{wait: 10 * time.Second, state: firing, changes: []string{"firing"}},
				{value: num(0), state: firing},
				{value: str("closed"), state: resolved, changes: []string{"resolved"}},
			},
		},
		{
			name: "bool inequality",
			rule: `{"id":"r","name":"not heating","scope":{},"condition":{"kind":"threshold","field":"heating","op":"!=","value":true}}`,
			steps: []step{
				{value: boolean(true), state: ""},
				{value: boolean(false), state: firing, changes: []string{"firing"}},
				{value: boolean(true), state: resolved, changes: []string{"resolved"}},
			},
		},
		{
			name: "rate of change over a window",
			rule: `{"id":"r","name":"rising","scope":{},"condition":{"kind":"rate","field":"temperature","op":">","value":2,"window":"5m"}}`,
			steps: []step{
				{value: num(20), state: ""},
				{wait: 2 * time.Minute, value: num(21), state: ""},
				{wait: 2 * time.Minute, value: num(22.5), state: firing, changes: []string{"firing"}},
				{wait: 2 * time.Minute, value: num(22.5), state: resolved, changes: []string{"resolved"}}, // 21 -> 22.5 within 5m
				{wait: 10 * time.Minute, value: num(30), state: resolved},                                 // the first sample of a window
				{wait: time.Second, value: num(32.5), state: firing, changes: []string{"firing"}},
			},
		},
		{
			name: "falling rate with for",
			rule: `{"id":"r","name":"falling","scope":{},"condition":{"kind":"rate","field":"battery","op":"<","value":-10,"window":"1h","for":"10m"}}`,
			steps: []step{
				{value: num(100), field: "battery", state: ""},
				{wait: 30 * time.Minute, value: num(85), field: "battery", state: pending, changes: []string{"pending"}},
				{wait: 10 * time.Minute, state: firing, changes: []string{"firing"}},
			},
		},
		{
			name: "absence of a field: fires on time, other fields do not count",
			rule: `{"id":"r","name":"quiet","scope":{"device":"d1"},"condition":{"kind":"absence","field":"temperature","for":"2m"}}`,
			steps: []step{
				{wait: time.Minute, value: num(20), state: ""},
				{wait: 90 * time.Second, value: num(20), field: "humidity", state: ""},
				{wait: 30 * time.Second, state: firing, changes: []string{"firing"}},
				{wait: time.Hour, state: firing},
				{value: num(21), state: resolved, changes: []string{"resolved"}},
				{wait: 2 * time.Minute, state: firing, changes: []string{"firing"}},
			},
		},
		{
			name: "absence of any data, from the start even if the device never sent",
			rule: `{"id":"r","name":"no data","scope":{"type":"thermostat"},"condition":{"kind":"absence","for":"2m"}}`,
			steps: []step{
				{wait: 2 * time.Minute, state: firing, changes: []string{"firing"}},
				{value: num(1), field: "anything", state: resolved, changes: []string{"resolved"}},
				{wait: 119 * time.Second, value: num(1), field: "other", state: resolved},
				{wait: 119 * time.Second, state: resolved},
				{wait: time.Second, state: firing, changes: []string{"firing"}},
			},
		},
		{
			name: "offline for a duration",
			rule: `{"id":"r","name":"offline","scope":{"labels":"room=lab"},"condition":{"kind":"offline","for":"1m"}}`,
			steps: []step{
				{online: ptr(true), state: ""},
				{wait: time.Hour, online: ptr(false), state: ""},
				{wait: 59 * time.Second, online: ptr(true), state: ""},
				{online: ptr(false), state: ""},
				{wait: time.Minute, state: firing, changes: []string{"firing"}},
				{wait: time.Hour, online: ptr(true), state: resolved, changes: []string{"resolved"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, testConfig())
				h.device("d1", "thermostat", map[string]string{"room": "lab"})
				r := h.rule(tc.rule)
				for i, s := range tc.steps {
					h.wait(s.wait)
					if s.value != nil {
						f := s.field
						if f == "" {
							f = r.Condition.Field
						}
						h.send("d1", f, *s.value)
					}
					if s.online != nil {
						h.e.PresenceChanged(devices.PresenceEvent{DeviceID: "d1", Online: *s.online, At: time.Now()})
					}
					synctest.Wait()
					require.Equal(t, s.state, h.state("r", "d1"), "step %d: state", i)
					require.Equal(t, s.changes, h.changes(), "step %d: changes", i)
				}
				// Exactly one alert is ever active per rule and device.
				active := h.e.Alerts(Filter{RuleID: "r", States: []string{StatePending, StateFiring}})
				require.LessOrEqual(t, len(active), 1)
			})
		})
	}
}

// TestScopesTouchOnlyMatchingRules: a reading evaluates the rules whose
// scope matches the device and whose field it carries, nothing else.
func TestScopesTouchOnlyMatchingRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("k1", "thermostat", map[string]string{"room": "kitchen", "floor": "1"})
		h.device("k2", "thermostat", map[string]string{"room": "hall", "floor": "2"})
		h.device("w1", "wearable", map[string]string{"room": "kitchen"})
		for _, js := range []string{
			`{"id":"dev","name":"one device","scope":{"device":"k1"},"condition":{"kind":"threshold","field":"t","op":">","value":0}}`,
			`{"id":"type","name":"type","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"t","op":">","value":0}}`,
			`{"id":"labels","name":"labels","scope":{"labels":"room=kitchen"},"condition":{"kind":"threshold","field":"t","op":">","value":0}}`,
			`{"id":"both","name":"type and labels","scope":{"type":"thermostat","labels":"floor in (2,3)"},"condition":{"kind":"threshold","field":"t","op":">","value":0}}`,
			`{"id":"all","name":"all","scope":{},"condition":{"kind":"threshold","field":"t","op":">","value":0}}`,
			`{"id":"other-field","name":"other field","scope":{},"condition":{"kind":"threshold","field":"u","op":">","value":0}}`,
		} {
			h.rule(js)
		}
		evals := func() uint64 { return uint64(testutil.ToFloat64(h.e.metrics.evaluations)) }
		for _, tc := range []struct {
			dev   string
			fired []string
		}{
			{"k1", []string{"all", "dev", "labels", "type"}},
			{"k2", []string{"all", "both", "type"}},
			{"w1", []string{"all", "labels"}},
		} {
			before := evals()
			h.send(tc.dev, "t", ingest.Number(1))
			require.Equal(t, uint64(len(tc.fired)), evals()-before, "%s: only matching rules evaluated", tc.dev)
			var got []string
			for _, a := range h.e.Alerts(Filter{DeviceID: tc.dev, States: []string{StateFiring}}) {
				got = append(got, a.RuleID)
			}
			require.ElementsMatch(t, tc.fired, got, tc.dev)
		}
	})
}

// TestOrderedThresholdsMatchNaiveEvaluation: the sorted threshold index
// (which skips thresholds a reading does not cross) fires and resolves
// exactly what evaluating every rule on every reading would.
func TestOrderedThresholdsMatchNaiveEvaluation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("d1", "thermostat", nil)
		rng := rand.New(rand.NewPCG(1, 2))
		type model struct {
			op           string
			value, clear float64
			hyst, active bool
		}
		ops := []string{">", ">=", "<", "<="}
		models := map[string]*model{}
		for i := range 40 {
			m := &model{op: ops[rng.IntN(4)], value: float64(rng.IntN(21)) / 2}
			cond := fmt.Sprintf(`"kind":"threshold","field":"t","op":%q,"value":%v`, m.op, m.value)
			if rng.IntN(2) == 0 {
				m.hyst = true
				if m.op[0] == '>' {
					m.clear = m.value - float64(rng.IntN(5))/2
					cond += fmt.Sprintf(`,"clear_below":%v`, m.clear)
				} else {
					m.clear = m.value + float64(rng.IntN(5))/2
					cond += fmt.Sprintf(`,"clear_above":%v`, m.clear)
				}
			}
			id := fmt.Sprintf("r%d", i)
			models[id] = m
			h.rule(`{"id":"` + id + `","name":"n","scope":{},"condition":{` + cond + `}}`)
		}
		seen := map[string]bool{}
		for step := range 200 {
			v := float64(rng.IntN(21)) / 2
			h.send("d1", "t", ingest.Number(v))
			newest := map[string]string{}
			for _, a := range h.e.Alerts(Filter{}) {
				if _, ok := newest[a.RuleID]; !ok {
					newest[a.RuleID] = a.State
				}
			}
			for id, m := range models {
				cross := map[string]bool{">": v > m.value, ">=": v >= m.value, "<": v < m.value, "<=": v <= m.value}[m.op]
				switch {
				case !m.active:
					m.active = cross
				case m.hyst && m.op[0] == '>':
					m.active = v >= m.clear
				case m.hyst:
					m.active = v <= m.clear
				default:
					m.active = cross
				}
				want := ""
				if m.active {
					want, seen[id] = StateFiring, true
				} else if seen[id] {
					want = StateResolved
				}
				require.Equal(t, want, newest[id], "step %d value %v rule %s %+v", step, v, id, *m)
			}
		}
	})
}
