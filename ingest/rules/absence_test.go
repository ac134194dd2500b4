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

// TestSharedLastSeenMatchesPerRuleTimers: absence rules sharing one "last
// seen" per device and field fire and resolve exactly when a clock of
// their own per rule would say, including rules added while the device
// keeps reporting (they count from their creation, not from older
// readings) and rules on any data.
func TestSharedLastSeenMatchesPerRuleTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.device("d1", "thermostat", nil)
		rng := rand.New(rand.NewPCG(5, 6))
		fields := []string{"t", "u", ""}
		type model struct {
			field string
			dur   time.Duration
			last  time.Time
			fired bool
		}
		models := map[string]*model{}
		addRules := func(from, n int) {
			for i := from; i < from+n; i++ {
				m := &model{field: fields[rng.IntN(len(fields))], dur: time.Duration(1+rng.IntN(6)) * 10 * time.Second, last: time.Now()}
				id := fmt.Sprintf("a%d", i)
				models[id] = m
				cond := fmt.Sprintf(`"kind":"absence","for":%q`, m.dur)
				if m.field != "" {
					cond += fmt.Sprintf(`,"field":%q`, m.field)
				}
				h.rule(`{"id":"` + id + `","name":"n","scope":{},"condition":{` + cond + `}}`)
			}
		}
		addRules(0, 12)
		for step := range 300 {
			if step%20 == 19 {
				addRules(100+step, 2)
			}
			h.wait(time.Duration(rng.IntN(25)) * time.Second)
			for _, m := range models {
				m.fired = m.fired || !time.Now().Before(m.last.Add(m.dur))
			}
			if rng.IntN(3) > 0 {
				f := fields[rng.IntN(2)]
				h.send("d1", f, ingest.Number(1))
				for _, m := range models {
					if m.field == "" || m.field == f {
						m.last = time.Now()
					}
				}
			}
			now := time.Now()
			for id, m := range models {
				want := ""
				if !now.Before(m.last.Add(m.dur)) {
					want, m.fired = StateFiring, true
				} else if m.fired {
					want = StateResolved
				}
				require.Equal(t, want, h.state(id, "d1"), "step %d rule %s %+v", step, id, *m)
			}
		}
	})
}
