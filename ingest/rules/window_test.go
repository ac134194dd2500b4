package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// naiveWindow is a rate window kept the simple way: one per rule, updated
// on every reading, as the engine did before windows were shared.
type naiveWindow struct {
	window  time.Duration
	samples []naiveSample
}

type naiveSample struct {
	t time.Time
	v float64
}

func (w *naiveWindow) add(t time.Time, v float64) float64 {
	res := w.window / maxSamples
	if n := len(w.samples); n >= 2 && t.Sub(w.samples[n-2].t) < res {
		w.samples[n-1] = naiveSample{t, v}
	} else {
		w.samples = append(w.samples, naiveSample{t, v})
	}
	for len(w.samples) > 1 && w.samples[0].t.Before(t.Add(-w.window)) {
		w.samples = w.samples[1:]
	}
	return v - w.samples[0].v
}

// TestSharedRateWindowsMatchNaiveEvaluation: rate rules sharing windows
// (and skipped while quiet) fire and resolve exactly what a window of their
// own per rule would, including rules added while others already hold
// history, which must not see the readings from before they existed.
func TestSharedRateWindowsMatchNaiveEvaluation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("d1", "thermostat", nil)
		rng := rand.New(rand.NewPCG(3, 4))
		type model struct {
			op     string
			value  float64
			win    *naiveWindow
			active bool
			seen   bool
		}
		ops := []string{">", ">=", "<", "<="}
		windows := []time.Duration{time.Minute, 5 * time.Minute}
		models := map[string]*model{}
		addRules := func(from, n int) {
			for i := from; i < from+n; i++ {
				m := &model{op: ops[rng.IntN(4)], value: float64(rng.IntN(9) - 4)}
				m.win = &naiveWindow{window: windows[rng.IntN(len(windows))]}
				id := fmt.Sprintf("r%d", i)
				models[id] = m
				h.rule(fmt.Sprintf(`{"id":%q,"name":"n","scope":{},"condition":{"kind":"rate","field":"t","op":%q,"value":%v,"window":%q}}`,
					id, m.op, m.value, m.win.window))
			}
		}
		addRules(0, 20)
		v := 20.0
		for step := range 300 {
			if step == 100 || step == 200 {
				addRules(step, 10)
			}
			h.wait(time.Duration(rng.IntN(40)) * time.Second)
			v += float64(rng.IntN(5) - 2)
			h.send("d1", "t", ingest.Number(v))
			now := time.Now()
			newest := map[string]string{}
			for _, a := range h.e.Alerts(Filter{}) {
				if _, ok := newest[a.RuleID]; !ok {
					newest[a.RuleID] = a.State
				}
			}
			for id, m := range models {
				d := m.win.add(now, v)
				m.active = map[string]bool{">": d > m.value, ">=": d >= m.value, "<": d < m.value, "<=": d <= m.value}[m.op]
				want := ""
				if m.active {
					want, m.seen = StateFiring, true
				} else if m.seen {
					want = StateResolved
				}
				require.Equal(t, want, newest[id], "step %d value %v rule %s change %v", step, v, id, d)
			}
		}
	})
}
