package rules

import (
	"slices"
	"time"

	"github.com/telehub/telehub/ingest"
)

// sample is one value of a rate rule's window.
type sample struct {
	t time.Time
	v float64
}

// maxSamples bounds a rate window; samples closer together than
// window/maxSamples are merged (the newer replaces the older).
const maxSamples = 64

// rateWin is the window of past values of one field of one device over
// which rate rules measure change. The rate rules of a device on the same
// field with the same window length whose states began at the same reading
// share one: their windows would hold the same samples, so one update per
// reading serves them all instead of one per rule. A rule whose state
// begins later (a rule added or changed, a state restored) gets a window of
// its own, so that sharing never changes what a rule sees. Guarded by its
// shard's mu.
type rateWin struct {
	window  time.Duration
	samples []sample
	lastTS  time.Time // newest reading time added; older ones are ignored
	seq     uint64    // the reading last offered
	ok      bool      // whether that reading was added (not older than lastTS)
	d       float64   // the change over the window at that reading
	// busy counts the states sharing the window that are active or have
	// an alert: while it is zero, a reading a rule does not hold on needs
	// nothing of the rule's state.
	busy int
	// members counts the states sharing the window.
	members int
}

// observe adds reading seq to the window, once however many rules share
// it, and returns the change from the oldest sample in the window to it;
// ok is false for a reading older than the newest added, which is ignored.
func (w *rateWin) observe(seq uint64, t time.Time, v float64) (d float64, ok bool) {
	if w.seq == seq {
		return w.d, w.ok
	}
	w.seq, w.ok = seq, !t.Before(w.lastTS)
	if !w.ok {
		return 0, false
	}
	w.lastTS = t
	res := w.window / maxSamples
	if n := len(w.samples); n >= 2 && t.Sub(w.samples[n-2].t) < res {
		w.samples[n-1] = sample{t, v}
	} else {
		w.samples = append(w.samples, sample{t, v})
	}
	from := t.Add(-w.window)
	drop := 0
	for drop < len(w.samples)-1 && w.samples[drop].t.Before(from) {
		drop++
	}
	if drop > 0 {
		w.samples = append(w.samples[:0], w.samples[drop:]...)
	}
	w.d = v - w.samples[0].v
	return w.d, true
}

// join makes w the rate state's window.
func (st *state) join(w *rateWin) {
	st.win = w
	w.members++
	st.busy = false
	st.updateBusy()
}

// updateBusy keeps the window's count of busy states in line with the
// state. Called whenever active or the alert may have changed (reconcile).
func (st *state) updateBusy() {
	w := st.win
	if w == nil {
		return
	}
	if b := st.active || st.alert != nil; b != st.busy {
		st.busy = b
		if b {
			w.busy++
		} else {
			w.busy--
		}
	}
}

// leaveWin takes a state that is being forgotten out of its window's count.
func (st *state) leaveWin() {
	if st.win != nil {
		if st.busy {
			st.win.busy--
		}
		st.win.members--
		st.win = nil
	}
	st.busy = false
}

// rateGroup is a device's rate rules on one field with one window length,
// sorted by threshold like ordered thresholds (see fieldRules).
type rateGroup struct {
	window   time.Duration
	up, down []ruleRef
	n        int
	// win is the window the group's states last shared. While every state
	// of the group shares it (members == n) and none is busy, a reading
	// updates it once and walks the rules only as far as the change
	// crosses their thresholds: in a steady fleet, one comparison.
	win *rateWin
}

// addRate adds a rate rule to its group.
func (fr *fieldRules) addRate(ref ruleRef) {
	i := slices.IndexFunc(fr.rates, func(g rateGroup) bool { return g.window == ref.window })
	if i < 0 {
		i = len(fr.rates)
		fr.rates = append(fr.rates, rateGroup{window: ref.window})
	}
	g := &fr.rates[i]
	if ref.op == opGT || ref.op == opGE {
		g.up = append(g.up, ref)
	} else {
		g.down = append(g.down, ref)
	}
	g.n++
}

// onRates evaluates a group of rate rules on a numeric reading.
func (sh *shard) onRates(dr *devRules, fr *fieldRules, g *rateGroup, devID string, ts time.Time, v ingest.Value, now time.Time) {
	if w := g.win; w != nil && w.busy == 0 && w.members == g.n {
		d, ok := w.observe(sh.seq, ts, v.Num)
		if !ok {
			return
		}
		for _, ref := range g.up {
			if !ref.op.num(d, ref.num) {
				break
			}
			sh.onValue(dr, fr, ref, devID, ts, v, now)
		}
		for _, ref := range g.down {
			if !ref.op.num(d, ref.num) {
				break
			}
			sh.onValue(dr, fr, ref, devID, ts, v, now)
		}
		return
	}
	// Some rule may change: evaluate each, then see whether they share a
	// window again.
	var shared *rateWin
	same, first := true, true
	for _, refs := range [2][]ruleRef{g.up, g.down} {
		for _, ref := range refs {
			sh.onValue(dr, fr, ref, devID, ts, v, now)
			w := dr.slots[ref.slot].win
			if first {
				shared, first = w, false
			}
			same = same && w == shared
		}
	}
	g.win = nil
	if same {
		g.win = shared
	}
}

// freshWin returns a window of the given length created at reading seq for
// the field, creating it when there is none: the window a rate state that
// begins at this reading joins.
func (fr *fieldRules) freshWin(seq uint64, window time.Duration) *rateWin {
	if fr.freshSeq != seq {
		fr.freshSeq, fr.fresh = seq, fr.fresh[:0]
	}
	for _, w := range fr.fresh {
		if w.window == window {
			return w
		}
	}
	w := &rateWin{window: window}
	fr.fresh = append(fr.fresh, w)
	return w
}
