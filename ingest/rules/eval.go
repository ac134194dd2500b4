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

// sample is one value of a rate rule's window.
type sample struct {
	t time.Time
	v float64
}

// maxSamples bounds a rate window; samples closer together than
// window/maxSamples are merged (the newer replaces the older).
const maxSamples = 64

// state is what the engine knows of one rule on one device. Guarded by
// Engine.mu.
type state struct {
	key     stateKey
	rule    *compiled
	devType string

	// active: the condition holds (with hysteresis) since activeSince.
	active      bool
	activeSince time.Time
	value       any       // the value that last decided the condition
	lastTS      time.Time // newest reading time evaluated; older ones are ignored

	lastSeen     time.Time // absence: arrival of the last matching reading
	offline      bool      // offline: the device is disconnected
	offlineSince time.Time
	samples      []sample // rate

	alert      *Alert      // the pending or firing alert, nil when none
	fires      []time.Time // recent firings, for flap detection
	clearSince time.Time   // flapping and clear since then; zero otherwise

	deadline time.Time
	hidx     int // position in Engine.timers, -1 when not scheduled
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

// addSample adds a reading to a rate window and returns the change from the
// oldest sample in the window to this one.
func (st *state) addSample(t time.Time, v float64, window time.Duration) float64 {
	res := window / maxSamples
	if n := len(st.samples); n >= 2 && t.Sub(st.samples[n-2].t) < res {
		st.samples[n-1] = sample{t, v}
	} else {
		st.samples = append(st.samples, sample{t, v})
	}
	from := t.Add(-window)
	drop := 0
	for drop < len(st.samples)-1 && st.samples[drop].t.Before(from) {
		drop++
	}
	if drop > 0 {
		st.samples = append(st.samples[:0], st.samples[drop:]...)
	}
	return v - st.samples[0].v
}

// onValue evaluates a threshold or rate rule on one reading field.
func (e *Engine) onValue(c *compiled, devID, devType string, ts time.Time, v ingest.Value, now time.Time) {
	k := stateKey{c.rule.ID, devID}
	st := e.states[k]
	switch c.kind {
	case KindThreshold:
		if st == nil {
			// The common case, a value within limits, allocates nothing.
			if hold, ok := c.holds(v, false); !ok || !hold {
				return
			}
			st = e.addState(c, devID, devType)
		}
		if ts.Before(st.lastTS) {
			return
		}
		hold, ok := c.holds(v, st.active)
		if !ok {
			return
		}
		st.lastTS, st.value = ts, valueOf(v)
		e.setActive(st, hold, now)
		e.maybeDrop(st, now)
	case KindRate:
		if v.Kind != ingest.KindNumber {
			return
		}
		if st == nil {
			st = e.addState(c, devID, devType)
		}
		if ts.Before(st.lastTS) {
			return
		}
		st.lastTS = ts
		d := st.addSample(ts, v.Num, c.window)
		st.value = d
		e.setActive(st, c.op.num(d, c.num), now)
	case KindAbsence:
		e.onData(c, devID, devType, now)
	}
}

// onData records that a reading arrived for an absence rule.
func (e *Engine) onData(c *compiled, devID, devType string, now time.Time) {
	st := e.states[stateKey{c.rule.ID, devID}]
	if st == nil {
		st = e.addState(c, devID, devType)
	}
	st.lastSeen = now
	if st.active || st.hidx < 0 {
		e.reconcile(st, now)
	}
}

func (e *Engine) addState(c *compiled, devID, devType string) *state {
	st := newState(c, devID, devType)
	e.states[st.key] = st
	return st
}

// maybeDrop forgets a threshold state that holds nothing worth keeping, so
// that memory follows the alerts, not the devices.
func (e *Engine) maybeDrop(st *state, now time.Time) {
	if st.rule.kind != KindThreshold || st.active || st.alert != nil || st.hidx >= 0 {
		return
	}
	st.fires = recent(st.fires, now, e.cfg.FlapWindow)
	if len(st.fires) == 0 {
		delete(e.states, st.key)
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
func (e *Engine) setActive(st *state, hold bool, now time.Time) {
	if hold == st.active {
		if hold && !st.clearSince.IsZero() {
			e.reconcile(st, now) // a flapping alert's condition is back
		}
		return
	}
	st.active = hold
	if hold {
		st.activeSince = now
	}
	e.reconcile(st, now)
}

// reconcile moves the state's alert to where the condition and the clock
// say it should be, and schedules the next deadline. It is idempotent:
// calling it early or twice changes nothing.
func (e *Engine) reconcile(st *state, now time.Time) {
	c := st.rule
	switch c.kind {
	case KindAbsence:
		due := st.lastSeen.Add(c.forDur)
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
		e.start(st, now)
	case st.active && a.State == StatePending:
		if !now.Before(st.activeSince.Add(c.forDur)) {
			e.fire(st, now)
		}
	case st.active:
		st.clearSince = time.Time{}
	case a == nil:
	case a.State == StatePending:
		e.discard(st, now)
	case a.Flapping:
		if st.clearSince.IsZero() {
			st.clearSince = now
		}
		if !now.Before(st.clearSince.Add(e.cfg.FlapHold)) {
			e.resolve(st, now, "condition cleared")
		}
	default:
		e.resolve(st, now, "condition cleared")
	}
	if e.timers.schedule(st, st.nextDeadline(e.cfg)) {
		e.wakeTimer = true
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
		return st.lastSeen.Add(c.forDur)
	case c.kind == KindOffline && st.offline && !st.active:
		return st.offlineSince.Add(c.forDur)
	}
	return time.Time{}
}

// start opens an alert: pending when the rule has a for duration to wait
// out, firing at once otherwise.
func (e *Engine) start(st *state, now time.Time) {
	c := st.rule
	a := &Alert{ID: newAlertID(now, &e.lastID), RuleID: c.rule.ID, RuleName: c.rule.Name, DeviceID: st.key.device,
		DeviceType: st.devType, Severity: severity(c.rule.Severity), Kind: c.kind, Field: c.field,
		StartedAt: st.activeSince, Targets: c.rule.Notify}
	if a.StartedAt.IsZero() {
		a.StartedAt = now
	}
	st.alert = a
	e.alerts[a.ID] = a
	if c.timed() || c.forDur == 0 || !now.Before(st.activeSince.Add(c.forDur)) {
		e.fire(st, now)
		return
	}
	a.State = StatePending
	e.count(StatePending, 1)
	a.Value, a.Summary = st.value, summary(c, st.value)
	a.record(Transition{Change: ChangePending, At: now, Value: st.value})
	e.changed(a, ChangePending, now)
}

func (e *Engine) fire(st *state, now time.Time) {
	a := st.alert
	if a.State == StatePending {
		e.count(StatePending, -1)
	}
	a.State = StateFiring
	e.count(StateFiring, 1)
	t := now
	a.FiredAt = &t
	a.Value, a.Summary = st.value, summary(st.rule, st.value)
	a.record(Transition{Change: ChangeFiring, At: now, Value: st.value})
	if n := e.cfg.FlapThreshold; n > 0 {
		st.fires = append(recent(st.fires, now, e.cfg.FlapWindow), now)
		if len(st.fires) > n {
			st.fires = st.fires[len(st.fires)-n:]
		}
		if len(st.fires) >= n {
			a.Flapping = true
			a.record(Transition{Change: ChangeFlapping, At: now,
				Note: fmt.Sprintf("fired %d times within %v: resolves only after %v clear", n, e.cfg.FlapWindow, e.cfg.FlapHold)})
		}
	}
	e.metrics.fired.Inc()
	e.changed(a, ChangeFiring, now)
}

func (e *Engine) resolve(st *state, now time.Time, reason string) {
	a := st.alert
	e.count(a.State, -1)
	a.State = StateResolved
	t := now
	a.ResolvedAt, a.ResolveReason = &t, reason
	if c := st.rule; c != nil && (c.kind == KindThreshold || c.kind == KindRate) {
		a.Value = st.value
	}
	a.record(Transition{Change: ChangeResolved, At: now, Value: a.Value, Note: reason})
	st.alert, st.clearSince = nil, time.Time{}
	e.resolved++
	e.metrics.resolved.Inc()
	e.changed(a, ChangeResolved, now)
}

// discard drops a pending alert whose condition cleared before it fired:
// it never happened, so it is not kept.
func (e *Engine) discard(st *state, now time.Time) {
	a := st.alert
	e.count(StatePending, -1)
	st.alert = nil
	delete(e.alerts, a.ID)
	a.State, a.Value, a.UpdatedAt = StateInactive, st.value, now
	e.changed(a, ChangeInactive, now)
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
