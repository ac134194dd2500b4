package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/telehub/telehub/ingest"
)

// stateKey identifies the state of one rule on one device.
type stateKey struct{ rule, device string }

// state is what the engine knows of one rule on one device. Guarded by
// its shard's mu.
type state struct {
	key     stateKey
	rule    *compiled
	devType string

	// active: the condition holds (with hysteresis) since activeSince.
	active      bool
	activeSince time.Time
	value       any       // the value that last decided the condition
	lastTS      time.Time // threshold: newest reading time evaluated; older ones are ignored (rate: rateWin.lastTS)

	lastSeen     time.Time // absence: arrival of the last matching reading (see lastSeenAt)
	seen         *absence  // absence: the group of the device's cached rules it is in
	offline      bool      // offline: the device is disconnected
	offlineSince time.Time
	win          *rateWin // rate: its window, shared (see rateWin)
	busy         bool     // rate: counted in win.busy (active, or has an alert)

	alert      *Alert      // the pending or firing alert, nil when none
	fires      []time.Time // recent firings, for flap detection
	clearSince time.Time   // flapping and clear since then; zero otherwise

	deadline time.Time
	hidx     int    // position in shard.timers, -1 when not scheduled
	slot     *slot  // where the device's cached rules hold this state
	live     *int32 // the counter of live ordered thresholds it adds to
}

func newState(c *compiled, devID, devType string) *state {
	return &state{key: stateKey{c.rule.ID, devID}, rule: c, devType: devType, hidx: -1}
}

// valueOf returns a reading value for keeping: strings are copied, because
// decoded strings share the payload's buffer.
func valueOf(v ingest.Value) any {
	if v.Kind == ingest.KindString {
		return strings.Clone(v.Str)
	}
	return v.Any()
}

// onValue evaluates a threshold or rate rule on one reading field. The
// common paths read only the ref and the state (a quiet rate rule: the ref,
// its slot and its shared window): the compiled rule is touched when a
// state is created or changes.
func (sh *shard) onValue(dr *devRules, fr *fieldRules, ref ruleRef, devID string, ts time.Time, v ingest.Value, now time.Time) {
	sl := &dr.slots[ref.slot]
	st := sl.st
	switch ref.kind {
	case codeThreshold:
		c := dr.rule(ref)
		if st == nil {
			// The common case, a value within limits, allocates nothing.
			if hold, ok := c.holds(v, false); !ok || !hold {
				return
			}
			st = sh.addState(c, devID, dr.typ)
		}
		if ts.Before(st.lastTS) {
			return
		}
		hold, ok := c.holds(v, st.active)
		if !ok {
			return
		}
		st.lastTS, st.value = ts, valueOf(v)
		sh.setActive(st, hold, now)
		sh.maybeDrop(st, now)
	case codeRate:
		if v.Kind != ingest.KindNumber {
			return
		}
		if st == nil {
			// A rule without a state is quiet: its window, in the slot,
			// is all there is of it until it holds.
			if sl.win == nil {
				sl.win = dr.freshWin(sh.seq, ref.window)
			}
			if d, ok := sl.win.observe(sh.seq, ts, v.Num, ref.window); !ok || !ref.op.num(d, ref.num) {
				return
			}
			st = sh.addState(dr.rule(ref), devID, dr.typ)
		}
		if st.win == nil {
			st.join(dr.freshWin(sh.seq, ref.window))
			if st.slot != nil {
				st.slot.win = st.win
			}
		}
		d, ok := st.win.observe(sh.seq, ts, v.Num, ref.window)
		if !ok {
			return
		}
		hold := ref.op.num(d, ref.num)
		if hold != st.active || st.alert != nil {
			st.value = d // boxing allocates: only when it is shown
		}
		sh.setActive(st, hold, now)
		sh.maybeDrop(st, now)
	}
}

// addState creates the state of a rule on a device, and puts it in the
// device's slot when the device's rules are cached.
func (sh *shard) addState(c *compiled, devID, devType string) *state {
	st := newState(c, devID, devType)
	sh.states[st.key] = st
	if dr := sh.devCache.get(sh.e.hash(devID), devID); dr != nil && dr.gen == sh.idx.gen {
		if i := dr.slotOf(c.rule.ID); i >= 0 {
			dr.link(i, st)
		}
	}
	return st
}

// dropState forgets a state, and empties its slot.
func (sh *shard) dropState(st *state) {
	delete(sh.states, st.key)
	st.leaveWin()
	st.leaveAbsence()
	if st.slot != nil && st.slot.st == st {
		st.slot.st = nil // a rate rule's window stays
		if st.live != nil {
			*st.live--
		}
	}
	st.slot, st.live = nil, nil
}

// onField evaluates a device's rules on one field of a reading and returns
// how many it evaluated.
func (sh *shard) onField(dr *devRules, fr *fieldRules, devID string, ts time.Time, v ingest.Value, now time.Time) int {
	sh.seq++
	n := int(fr.each.n)
	if fr.each.n > 0 {
		for _, ref := range dr.list(fr.each) {
			sh.onValue(dr, fr, ref, devID, ts, v, now)
		}
	}
	if fr.absent >= 0 {
		g := &dr.absents[fr.absent]
		sh.onSeen(dr, g, devID, now)
		n += int(g.refs.n)
	}
	if fr.rates.n > 0 {
		gs := dr.rates(fr)
		for i := range gs {
			g := &gs[i]
			n += int(g.up.n + g.down.n)
			if v.Kind == ingest.KindNumber {
				sh.onRates(dr, fr, g, devID, ts, v, now)
			}
		}
	}
	if v.Kind != ingest.KindNumber {
		return n
	}
	all := fr.liveN > 0
	if all || fr.above(v.Num) {
		for _, ref := range dr.list(fr.up) {
			if !all && !ref.op.num(v.Num, ref.num) {
				break
			}
			sh.onValue(dr, fr, ref, devID, ts, v, now)
			n++
		}
	}
	if all || fr.below(v.Num) {
		for _, ref := range dr.list(fr.down) {
			if !all && !ref.op.num(v.Num, ref.num) {
				break
			}
			sh.onValue(dr, fr, ref, devID, ts, v, now)
			n++
		}
	}
	return n
}

// maybeDrop forgets a threshold or rate state, or the offline state of an
// online device, that holds nothing worth keeping, so that memory follows
// the alerts, not the devices.
func (sh *shard) maybeDrop(st *state, now time.Time) {
	switch {
	case st.active || st.alert != nil || st.hidx >= 0:
		return
	case st.rule.kind == KindThreshold, st.rule.kind == KindRate:
	case st.rule.kind == KindOffline && !st.offline:
	default:
		return
	}
	st.fires = recent(st.fires, now, sh.e.cfg.FlapWindow)
	if len(st.fires) == 0 {
		sh.dropState(st)
	}
}

// recent keeps the times within window before now.
func recent(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > window {
		i++
	}
	if i == len(ts) {
		return ts[:0]
	}
	return ts[i:]
}

// setActive records whether a value-driven condition holds.
func (sh *shard) setActive(st *state, hold bool, now time.Time) {
	if hold == st.active {
		if hold && !st.clearSince.IsZero() {
			sh.reconcile(st, now) // a flapping alert's condition is back
		}
		return
	}
	st.active = hold
	if hold {
		st.activeSince = now
	}
	sh.reconcile(st, now)
}

// reconcile moves the state's alert to where the condition and the clock
// say it should be, and schedules the next deadline. It is idempotent:
// calling it early or twice changes nothing.
func (sh *shard) reconcile(st *state, now time.Time) {
	c := st.rule
	switch c.kind {
	case KindAbsence:
		due := st.lastSeenAt().Add(c.forDur)
		if !now.Before(due) && !st.active {
			st.activeSince = due
		}
		st.active = !now.Before(due)
	case KindOffline:
		due := st.offlineSince.Add(c.forDur)
		if st.offline && !now.Before(due) && !st.active {
			st.activeSince = due
		}
		st.active = st.offline && !now.Before(due)
	}
	a := st.alert
	switch {
	case st.active && a == nil:
		sh.start(st, now)
	case st.active && a.State == StatePending:
		if !now.Before(st.activeSince.Add(c.forDur)) {
			sh.fire(st, now)
		}
	case st.active:
		st.clearSince = time.Time{}
	case a == nil:
	case a.State == StatePending:
		sh.discard(st, now)
	case a.Flapping:
		if st.clearSince.IsZero() {
			st.clearSince = now
		}
		if !now.Before(st.clearSince.Add(sh.e.cfg.FlapHold)) {
			sh.resolve(st, now, "condition cleared")
		}
	default:
		sh.resolve(st, now, "condition cleared")
	}
	st.updateBusy()
	if sh.timers.schedule(st, st.nextDeadline(sh.e.cfg)) {
		sh.wakeTimer = true
	}
	if g := st.seen; g != nil && (st.active || st.hidx < 0) {
		g.quiet = false
	}
}

// nextDeadline is when the state must next be reconciled without a
// reading; zero when only a reading or a presence change can alter it.
func (st *state) nextDeadline(cfg Config) time.Time {
	c := st.rule
	a := st.alert
	switch {
	case a != nil && a.State == StatePending:
		return st.activeSince.Add(c.forDur)
	case a != nil && !st.clearSince.IsZero():
		return st.clearSince.Add(cfg.FlapHold)
	case c.kind == KindAbsence && !st.active:
		return st.lastSeenAt().Add(c.forDur)
	case c.kind == KindOffline && st.offline && !st.active:
		return st.offlineSince.Add(c.forDur)
	}
	return time.Time{}
}

// start opens an alert: pending when the rule has a for duration to wait
// out, firing at once otherwise.
func (sh *shard) start(st *state, now time.Time) {
	c := st.rule
	a := &Alert{ID: newAlertID(now, &sh.e.lastID), RuleID: c.rule.ID, RuleName: c.rule.Name, DeviceID: st.key.device,
		DeviceType: st.devType, Severity: severity(c.rule.Severity), Kind: c.kind, Field: c.field,
		StartedAt: st.activeSince, Targets: c.rule.Notify}
	if a.StartedAt.IsZero() {
		a.StartedAt = now
	}
	st.alert = a
	sh.alerts[a.ID] = a
	if c.timed() || c.forDur == 0 || !now.Before(st.activeSince.Add(c.forDur)) {
		sh.fire(st, now)
		return
	}
	a.State = StatePending
	sh.count(StatePending, 1)
	a.Value, a.Summary = st.value, summary(c, st.value)
	a.record(Transition{Change: ChangePending, At: now, Value: st.value})
	sh.changed(a, ChangePending, now)
}

func (sh *shard) fire(st *state, now time.Time) {
	a := st.alert
	if a.State == StatePending {
		sh.count(StatePending, -1)
	}
	a.State = StateFiring
	sh.count(StateFiring, 1)
	t := now
	a.FiredAt = &t
	a.Value, a.Summary = st.value, summary(st.rule, st.value)
	a.record(Transition{Change: ChangeFiring, At: now, Value: st.value})
	if n := sh.e.cfg.FlapThreshold; n > 0 {
		st.fires = append(recent(st.fires, now, sh.e.cfg.FlapWindow), now)
		if len(st.fires) > n {
			st.fires = st.fires[len(st.fires)-n:]
		}
		if len(st.fires) >= n {
			a.Flapping = true
			a.record(Transition{Change: ChangeFlapping, At: now,
				Note: fmt.Sprintf("fired %d times within %v: resolves only after %v clear", n, sh.e.cfg.FlapWindow, sh.e.cfg.FlapHold)})
		}
	}
	sh.e.metrics.fired.Inc()
	sh.changed(a, ChangeFiring, now)
}

func (sh *shard) resolve(st *state, now time.Time, reason string) {
	a := st.alert
	sh.count(a.State, -1)
	a.State = StateResolved
	t := now
	a.ResolvedAt, a.ResolveReason = &t, reason
	if c := st.rule; c != nil && (c.kind == KindThreshold || c.kind == KindRate) {
		a.Value = st.value
	}
	a.record(Transition{Change: ChangeResolved, At: now, Value: a.Value, Note: reason})
	st.alert, st.clearSince = nil, time.Time{}
	sh.resolved++
	sh.e.metrics.resolved.Inc()
	sh.changed(a, ChangeResolved, now)
}

// discard drops a pending alert whose condition cleared before it fired:
// it never happened, so it is not kept.
func (sh *shard) discard(st *state, now time.Time) {
	a := st.alert
	sh.count(StatePending, -1)
	st.alert = nil
	delete(sh.alerts, a.ID)
	a.State, a.Value, a.UpdatedAt = StateInactive, st.value, now
	sh.changed(a, ChangeInactive, now)
}

func severity(s string) string {
	if s == "" {
		return SeverityWarning
	}
	return s
}

// summary describes the alert in a sentence for people.
func summary(c *compiled, v any) string {
	switch c.kind {
	case KindThreshold:
		s := fmt.Sprintf("%s is %s (%s %s", c.field, format(v), c.op, c.threshold())
		if c.forDur > 0 {
			s += " for " + c.forDur.String()
		}
		return s + ")"
	case KindRate:
		d, _ := v.(float64)
		sign := ""
		if d >= 0 {
			sign = "+"
		}
		s := fmt.Sprintf("%s changed by %s%s within %v (%s %s", c.field, sign, format(d), c.window, c.op, c.threshold())
		if c.forDur > 0 {
			s += " for " + c.forDur.String()
		}
		return s + ")"
	case KindAbsence:
		if c.field == "" {
			return "no data for " + c.forDur.String()
		}
		return fmt.Sprintf("no %s reading for %v", c.field, c.forDur)
	default:
		return "offline for " + c.forDur.String()
	}
}

func (c *compiled) threshold() string {
	switch c.vkind {
	case valueBool:
		return strconv.FormatBool(c.bval)
	case valueString:
		return strconv.Quote(c.sval)
	}
	return strconv.FormatFloat(c.num, 'g', -1, 64)
}

func format(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'g', 6, 64)
	case string:
		return strconv.Quote(v)
	case nil:
		return "?"
	}
	return fmt.Sprint(v)
}
