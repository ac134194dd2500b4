package rules

import "time"

// absence is a device's absence rules on one field (or on any data): the
// time of the last reading is kept here once for all of them, so that a
// reading costs one store however many absence rules watch the field. Each
// rule's state reads it when its timer fires (state.lastSeenAt). Guarded by
// its shard's mu.
type absence struct {
	refs span
	seen time.Time // arrival of the last reading, since the device's rules were cached
	// quiet is true when every state of refs exists, is not active and has
	// its deadline scheduled: a reading then only needs to move seen, as
	// an early timer works out the real deadline from it. A state of refs
	// that becomes active or unscheduled, or is dropped, clears it.
	quiet bool
}

// lastSeenAt is when the absence state last saw a reading: the later of its
// own time (when it began watching, or the last reading it was given) and
// its group's.
func (st *state) lastSeenAt() time.Time {
	if g := st.seen; g != nil && g.seen.After(st.lastSeen) {
		return g.seen
	}
	return st.lastSeen
}

// joinAbsence links an absence state to its group in a device's cached
// rules, keeping what the previous group saw.
func (st *state) joinAbsence(g *absence) {
	st.lastSeen = st.lastSeenAt()
	st.seen = g
	g.quiet = false
}

// leaveAbsence unlinks an absence state that is being forgotten.
func (st *state) leaveAbsence() {
	if g := st.seen; g != nil {
		st.lastSeen = st.lastSeenAt()
		g.quiet = false
		st.seen = nil
	}
}

// absenceGroup returns the group of the device's absence rules on field
// ("" for any data).
func (dr *devRules) absenceGroup(field string) *absence {
	if field == "" {
		return &dr.anyData
	}
	if fr := dr.field(field); fr != nil && fr.absent >= 0 {
		return &dr.absents[fr.absent]
	}
	return nil
}

// onSeen records that a reading arrived for a group of absence rules, and
// reconciles those that need it (an active one resolves).
func (sh *shard) onSeen(dr *devRules, g *absence, devID string, now time.Time) {
	g.seen = now
	if g.quiet {
		return
	}
	quiet := true
	for _, ref := range dr.list(g.refs) {
		st := dr.slots[ref.slot].st
		if st == nil {
			st = sh.addState(dr.rule(ref), devID, dr.typ)
		}
		st.lastSeen = now
		if st.active || st.hidx < 0 {
			sh.reconcile(st, now)
		}
		quiet = quiet && st.seen == g && !st.active && st.hidx >= 0
	}
	g.quiet = quiet
}
