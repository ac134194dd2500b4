package rules

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/live"
)

// shard is the engine for a partition of the devices: their rule caches,
// states, alerts and timers, under one lock. Shards share only the
// immutable index and the engine's configuration.
type shard struct {
	e *Engine

	mu        sync.Mutex
	idx       *index // the index this shard evaluates with
	states    map[stateKey]*state
	devCache  devTable
	alerts    map[string]*Alert // every alert kept: active ones and the history
	timers    timers
	dirty     map[string]struct{} // alert IDs to write (or delete when gone)
	events    []Event             // to publish once mu is released
	counts    map[string]int      // alerts by state
	resolved  int                 // resolved alerts kept
	seq       uint64              // readings of a field evaluated, numbering them for rate windows
	wakeTimer bool

	pubMu sync.Mutex // keeps events in order between mu and the stream
	wake  chan struct{}
}

func newShard(e *Engine) *shard {
	return &shard{e: e, states: map[stateKey]*state{}, alerts: map[string]*Alert{},
		dirty: map[string]struct{}{}, counts: map[string]int{}, wake: make(chan struct{}, 1)}
}

// labelRecheck is how often a device's labels are compared with the
// registry's on its readings: a label change takes effect within this.
const labelRecheck = time.Second

// deviceRules returns the rules watching a device, from the cache when the
// rules and its type have not changed and its labels were checked recently.
// h is the hash of id (Engine.hash). Called with mu held.
func (sh *shard) deviceRules(h uint64, id, typ string, now time.Time) *devRules {
	x := sh.idx
	dr := sh.devCache.get(h, id)
	if dr != nil && dr.gen == x.gen && dr.typ == typ && (!x.labels || now.Sub(dr.checked) < labelRecheck) {
		return dr
	}
	var labels map[string]string
	if x.labels {
		if d, ok := sh.e.devs.Get(id); ok {
			labels = d.Labels
		}
	}
	if dr == nil || !dr.current(x, typ, labels) {
		old := dr
		dr = x.forDevice(id, typ, labels)
		sh.devCache.put(h, dr)
		type oldSlot struct {
			c   *compiled
			win *rateWin
		}
		var oldSlots map[string]oldSlot
		if old != nil {
			oldSlots = make(map[string]oldSlot, len(old.slots))
			for _, sl := range old.slots {
				c := old.x.list[sl.rule]
				oldSlots[c.rule.ID] = oldSlot{c, sl.win}
			}
		}
		for i := range dr.slots {
			sl := &dr.slots[i]
			c := x.list[sl.rule]
			// A rate rule without a state keeps its window, unless
			// the rule's condition changed.
			if o := oldSlots[c.rule.ID]; o.win != nil && o.c.evalKey == c.evalKey {
				sl.win = o.win
			}
			if st := sh.states[stateKey{c.rule.ID, id}]; st != nil {
				dr.link(int32(i), st)
			}
		}
		if old != nil && old.gen == x.gen {
			// Same rules, new labels: rules the device left end for it.
			for rule := range oldSlots {
				if dr.slotOf(rule) < 0 {
					if st := sh.states[stateKey{rule, id}]; st != nil {
						sh.end(st, now, "device left the rule's scope")
					}
				}
			}
		}
	}
	dr.checked = now
	return dr
}

// watchAll starts watching the shard's registered devices in a timed
// rule's scope, as if they had last reported (or gone offline) at now. An
// offline rule gets no state for a device that is online: its state is
// created when the device goes offline, and dropped once it is back and
// the alert is over (maybeDrop).
func (sh *shard) watchAll(c *compiled, devs []devices.Device, now time.Time) {
	for _, d := range devs {
		if sh.e.shardOf(d.ID) != sh || !c.matches(d.ID, d.Type, d.Labels) {
			continue
		}
		if sh.states[stateKey{c.rule.ID, d.ID}] != nil {
			continue
		}
		if c.kind == KindOffline && sh.e.pres != nil && sh.e.pres.Online(d.ID) {
			continue // an online device's offline state begins when it goes
		}
		st := sh.addState(c, d.ID, d.Type)
		switch c.kind {
		case KindAbsence:
			st.lastSeen = now
		case KindOffline:
			st.offline, st.offlineSince = true, now
		}
		sh.reconcile(st, now)
	}
}

// apply brings the shard's states in line with a new index: states of
// deleted rules, or of rules whose scope or condition changed, end (their
// alerts resolve); the others follow the new rule. New or changed timed
// rules start watching devs. Called with mu held.
func (sh *shard) apply(x *index, devs []devices.Device, now time.Time) {
	old := sh.idx
	sh.idx = x
	for k, st := range sh.states {
		switch nc := x.rules[k.rule]; {
		case nc == nil:
			sh.end(st, now, "rule deleted")
		case nc.evalKey != st.rule.evalKey:
			sh.end(st, now, "rule changed")
		default:
			st.rule = nc
			if a := st.alert; a != nil && (a.RuleName != nc.rule.Name || a.Severity != severity(nc.rule.Severity) || !slices.Equal(a.Targets, nc.rule.Notify)) {
				a.RuleName, a.Severity, a.Targets = nc.rule.Name, severity(nc.rule.Severity), nc.rule.Notify
				sh.dirty[a.ID] = struct{}{}
			}
		}
	}
	if devs == nil {
		return
	}
	for _, c := range x.timed {
		if old == nil || old.rules[c.rule.ID] == nil || old.rules[c.rule.ID].evalKey != c.evalKey {
			sh.watchAll(c, devs, now)
		}
	}
}

// end forgets a state, resolving its firing alert and dropping a pending
// one.
func (sh *shard) end(st *state, now time.Time, reason string) {
	sh.timers.unschedule(st)
	switch {
	case st.alert == nil:
	case st.alert.State == StatePending:
		sh.discard(st, now)
	default:
		sh.resolve(st, now, reason)
	}
	sh.dropState(st)
}

// changed records an alert change: to be written, and published.
func (sh *shard) changed(a *Alert, change string, now time.Time) {
	sh.dirty[a.ID] = struct{}{}
	ev := Event{Change: change, Alert: a.clone(false)}
	ev.Silenced = sh.e.silenced(a.RuleID, now)
	sh.events = append(sh.events, ev)
}

func (sh *shard) count(s string, d int) { sh.counts[s] += d }

// unsilenced re-announces the shard's firing alerts of a rule whose
// silence ended. Called with mu held.
func (sh *shard) unsilenced(ruleID string, now time.Time) {
	for _, st := range sh.states {
		if st.key.rule == ruleID && st.alert != nil && st.alert.State == StateFiring {
			st.alert.record(Transition{Change: ChangeUnsilenced, At: now})
			sh.changed(st.alert, ChangeUnsilenced, now)
		}
	}
}

// unlockAndPublish releases mu and then publishes the events gathered under
// it, in order, and wakes the goroutines that have work.
func (sh *shard) unlockAndPublish() {
	evs := sh.events
	sh.events = nil
	wake, flush := sh.wakeTimer, len(sh.dirty) > 0
	sh.wakeTimer = false
	if len(evs) == 0 {
		sh.mu.Unlock()
	} else {
		sh.pubMu.Lock()
		sh.mu.Unlock()
		msgs := make([]live.Message, 0, len(evs))
		for _, ev := range evs {
			m, err := live.Event(live.KindAlert, ev.DeviceID, ev.UpdatedAt, ev)
			if err != nil {
				sh.e.log.Error("alert event not published", "alert_id", ev.ID, "err", err)
				continue
			}
			msgs = append(msgs, m)
		}
		sh.e.live.Publish(msgs...)
		sh.pubMu.Unlock()
	}
	if wake {
		signal(sh.wake)
	}
	if flush {
		signal(sh.e.flush)
	}
}

// tickBatch bounds the timers handled under one hold of mu, so that a mass
// expiry (every device of a fleet offline at once) does not stall ingest.
const tickBatch = 256

// run is the shard's timer goroutine: it reconciles states whose deadline
// passed.
func (sh *shard) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		sh.mu.Lock()
		next, ok := sh.timers.next()
		sh.mu.Unlock()
		var due <-chan time.Time
		if ok {
			t.Reset(time.Until(next))
			due = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-sh.wake:
		case <-due:
			sh.tick(time.Now())
		}
	}
}

func (sh *shard) tick(now time.Time) {
	for more := true; more; {
		sh.mu.Lock()
		more = false
		for i := 0; i < tickBatch; i++ {
			st := sh.timers.popDue(now)
			if st == nil {
				break
			}
			more = i == tickBatch-1
			if sh.states[st.key] != st {
				continue
			}
			sh.reconcile(st, now)
			sh.maybeDrop(st, now)
		}
		sh.unlockAndPublish()
	}
}
