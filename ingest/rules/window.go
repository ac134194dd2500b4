package rules

import (
	"math"
	"time"

	"github.com/telehub/telehub/ingest"
)

// sample is one value of a rate rule's window, at t (Unix nanoseconds:
// reading times are wall-clock times between 1970 and 2200). It holds no
// pointer, so windows cost the garbage collector nothing to scan.
type sample struct {
	t int64
	v float64
}

// maxSamples bounds a rate window; samples closer together than
// window/maxSamples are merged (the newer replaces the older).
const maxSamples = 64

// rateWin is the window of past values of one field of one device over
// which rate rules measure change (its length is theirs: window). The rate rules of a device on the same
// field with the same window length whose states began at the same reading
// share one: their windows would hold the same samples, so one update per
// reading serves them all instead of one per rule. A rule whose state
// begins later (a rule added or changed, a state restored) gets a window of
// its own, so that sharing never changes what a rule sees. Guarded by its
// shard's mu.
type rateWin struct {
	seq uint64 // the reading last offered
	// busy counts the states sharing the window that are active or have
	// an alert: while it is zero, a reading a rule does not hold on needs
	// nothing of the rule's state.
	busy    int
	lastTS  int64   // newest reading time added (Unix ns); older ones are ignored
	d       float64 // the change over the window at reading seq
	ok      bool    // whether that reading was added (not older than lastTS)
	samples []sample
}

// winInline is the number of samples a window holds in its own allocation
// before they move to one of their own: a window and its first samples are
// 128 bytes, two neighbouring cache lines.
const winInline = 4

type rateWinBuf struct {
	w   rateWin
	buf [winInline]sample
}

func newRateWin() *rateWin {
	b := &rateWinBuf{w: rateWin{lastTS: math.MinInt64}}
	b.w.samples = b.buf[:0]
	return &b.w
}

// observe adds reading seq to the window, once however many rules share
// it, and returns the change from the oldest sample in the window to it;
// ok is false for a reading older than the newest added, which is ignored.
func (w *rateWin) observe(seq uint64, t time.Time, v float64, window time.Duration) (d float64, ok bool) {
	if w.seq == seq {
		return w.d, w.ok
	}
	ts := t.UnixNano()
	w.seq, w.ok = seq, ts >= w.lastTS
	if !w.ok {
		return 0, false
	}
	w.lastTS = ts
	res := int64(window / maxSamples)
	if n := len(w.samples); n >= 2 && ts-w.samples[n-2].t < res {
		w.samples[n-1] = sample{ts, v}
	} else {
		w.samples = append(w.samples, sample{ts, v})
	}
	from := ts - int64(window)
	drop := 0
	for drop < len(w.samples)-1 && w.samples[drop].t < from {
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
		st.win = nil
	}
	st.busy = false
}

// rateGroup is a device's rate rules on one field with one window length,
// sorted by threshold like ordered thresholds (see fieldRules). 64 bytes.
type rateGroup struct {
	// win is the window every rule of the group last shared (in its slot;
	// nil when they did not, or a slot's window changed since). While it is
	// set and no state sharing it is busy, a reading
	// updates it once and walks the rules only as far as the change
	// crosses their thresholds: in a steady fleet, one comparison with
	// a gate.
	win              *rateWin
	upGate, downGate gate // the first of up and of down
	up, down         span
	window           time.Duration
}

// onRates evaluates a group of rate rules on a numeric reading.
func (sh *shard) onRates(dr *devRules, fr *fieldRules, g *rateGroup, devID string, ts time.Time, v ingest.Value, now time.Time) {
	if w := g.win; w != nil && w.busy == 0 {
		d, ok := w.observe(sh.seq, ts, v.Num, g.window)
		if !ok {
			return
		}
		if g.upGate.above(d) {
			for _, ref := range dr.list(g.up) {
				if !ref.op.num(d, ref.num) {
					break
				}
				sh.onValue(dr, fr, ref, devID, ts, v, now)
			}
		}
		if g.downGate.below(d) {
			for _, ref := range dr.list(g.down) {
				if !ref.op.num(d, ref.num) {
					break
				}
				sh.onValue(dr, fr, ref, devID, ts, v, now)
			}
		}
		return
	}
	// Some rule may change: evaluate each, then see whether they share a
	// window again.
	var shared *rateWin
	same, first := true, true
	for _, refs := range [2]span{g.up, g.down} {
		for _, ref := range dr.list(refs) {
			sh.onValue(dr, fr, ref, devID, ts, v, now)
			w := dr.slots[ref.slot].win
			if first {
				shared, first = w, false
			}
			same = same && w == shared
		}
	}
	g.win = nil
	if same && shared != nil {
		g.win = shared
	}
}

// freshWin returns a window of the given length created at reading seq for
// the field, creating it when there is none: the window a rate state that
// begins at this reading joins.
func (dr *devRules) freshWin(seq uint64, window time.Duration) *rateWin {
	if dr.freshSeq != seq {
		dr.freshSeq, dr.fresh = seq, dr.fresh[:0]
	}
	for _, f := range dr.fresh {
		if f.window == window {
			return f.w
		}
	}
	w := newRateWin()
	dr.fresh = append(dr.fresh, fresh{w, window})
	return w
}

// fresh is a window created at a reading, and its length.
type fresh struct {
	w      *rateWin
	window time.Duration
}
