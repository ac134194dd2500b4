package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The engine's buckets in the hub's state database: rules by ID, alerts
// (active and history) by ID.
var (
	rulesBucket  = []byte("rules")
	alertsBucket = []byte("alerts")
)

// load reads the rules and alerts and merges the declared rules. It returns
// the IDs of rules whose scope or condition changed since the last run, so
// that their alerts restart.
func (e *Engine) load(declared []Spec, now time.Time) (changed map[string]bool, err error) {
	now = now.UTC().Truncate(time.Millisecond)
	changed = map[string]bool{}
	err = e.db.Update(func(tx *bolt.Tx) error {
		rb, err := tx.CreateBucketIfNotExists(rulesBucket)
		if err != nil {
			return err
		}
		ab, err := tx.CreateBucketIfNotExists(alertsBucket)
		if err != nil {
			return err
		}
		if err := rb.ForEach(func(k, v []byte) error {
			var r Rule
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rule %q: %w", k, err)
			}
			e.rules[r.ID] = &r
			return nil
		}); err != nil {
			return err
		}
		declaredIDs := map[string]bool{}
		for _, s := range declared {
			declaredIDs[s.ID] = true
			r := &Rule{Spec: s, Source: SourceConfig, CreatedAt: now, UpdatedAt: now}
			if old := e.rules[s.ID]; old != nil {
				if old.Source != SourceConfig {
					e.log.Warn("a rule of the config file replaces the API rule of the same ID", "rule_id", s.ID)
				}
				r.CreatedAt, r.UpdatedAt, r.SilencedUntil, r.SilencedBy = old.CreatedAt, old.UpdatedAt, old.SilencedUntil, old.SilencedBy
				if !sameSpec(old.Spec, s) {
					r.UpdatedAt = now
					changed[s.ID] = true
				}
			}
			if err := putRule(rb, r); err != nil {
				return err
			}
			e.rules[s.ID] = r
		}
		for id, r := range e.rules {
			if r.Source == SourceConfig && !declaredIDs[id] {
				e.log.Info("rule no longer in the config file: removed", "rule_id", id)
				if err := rb.Delete([]byte(id)); err != nil {
					return err
				}
				delete(e.rules, id)
			}
		}
		return ab.ForEach(func(k, v []byte) error {
			var a Alert
			if err := json.Unmarshal(v, &a); err != nil {
				e.log.Error("unreadable alert dropped", "alert_id", string(k), "err", err)
				e.dirty[string(k)] = struct{}{}
				return nil
			}
			e.alerts[a.ID] = &a
			if a.State == StateResolved {
				e.resolved++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load rules and alerts: %w", err)
	}
	return changed, nil
}

func sameSpec(a, b Spec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func putRule(b *bolt.Bucket, r *Rule) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.ID), v)
}

// install builds the index from e.rules and brings the states in line:
// states of deleted rules, or of rules whose scope or condition changed,
// end (their alerts resolve); the others follow the new rule. Called with
// mu held; e.rules must not change meanwhile (rulesMu).
func (e *Engine) install(now time.Time) {
	old := e.idx.Load()
	var gen uint64
	if old != nil {
		gen = old.gen + 1
	}
	cs := make(map[string]*compiled, len(e.rules))
	for id, r := range e.rules {
		c, err := compileRule(*r)
		if err != nil {
			// Only possible for a stored rule that a newer hub validates
			// more strictly: keep it stored, do not evaluate it.
			e.log.Error("rule not evaluated: invalid", "rule", describe(r), "err", err)
			continue
		}
		cs[id] = c
	}
	x := buildIndex(gen, cs)
	e.idx.Store(x)
	for k, st := range e.states {
		switch nc := cs[k.rule]; {
		case nc == nil:
			e.end(st, now, "rule deleted")
		case nc.evalKey != st.rule.evalKey:
			e.end(st, now, "rule changed")
		default:
			st.rule = nc
			if a := st.alert; a != nil && (a.RuleName != nc.rule.Name || a.Severity != severity(nc.rule.Severity) || !slices.Equal(a.Targets, nc.rule.Notify)) {
				a.RuleName, a.Severity, a.Targets = nc.rule.Name, severity(nc.rule.Severity), nc.rule.Notify
				e.dirty[a.ID] = struct{}{}
			}
		}
	}
	for id, r := range e.rules {
		if r.SilencedUntil != nil && now.Before(*r.SilencedUntil) {
			if e.silences[id] != *r.SilencedUntil {
				e.silences[id] = *r.SilencedUntil
				e.wakeTimer = true
			}
		} else if _, ok := e.silences[id]; ok {
			delete(e.silences, id)
			e.unsilenced(id, now)
		}
	}
	for id := range e.silences {
		if cs[id] == nil {
			delete(e.silences, id)
		}
	}
	if e.started {
		for _, c := range x.timed {
			if old == nil || old.rules[c.rule.ID] == nil || old.rules[c.rule.ID].evalKey != c.evalKey {
				e.watchAll(c, now)
			}
		}
	}
}

// end forgets a state, resolving its firing alert and dropping a pending
// one.
func (e *Engine) end(st *state, now time.Time, reason string) {
	e.timers.unschedule(st)
	switch {
	case st.alert == nil:
	case st.alert.State == StatePending:
		e.discard(st, now)
	default:
		e.resolve(st, now, reason)
	}
	delete(e.states, st.key)
}

// restore rebuilds the state of the pending and firing alerts loaded from
// the database. Alerts of rules that are gone or changed resolve. Called
// with mu held, after install.
func (e *Engine) restore(changed map[string]bool, now time.Time) {
	x := e.idx.Load()
	for _, a := range e.alerts {
		if !a.active() {
			continue
		}
		e.count(a.State, 1)
		c := x.rules[a.RuleID]
		k := stateKey{a.RuleID, a.DeviceID}
		st := &state{key: k, rule: c, devType: a.DeviceType, alert: a, value: a.Value, hidx: -1}
		switch {
		case c == nil:
			e.restoreEnd(st, now, "rule deleted")
			continue
		case changed[a.RuleID] || c.kind != a.Kind:
			e.restoreEnd(st, now, "rule changed")
			continue
		case e.states[k] != nil:
			// Two active alerts for one pair cannot happen; if a damaged
			// database has them, the newer wins.
			if other := e.states[k].alert; other.StartedAt.After(a.StartedAt) {
				e.restoreEnd(st, now, "duplicate")
				continue
			}
			e.restoreEnd(e.states[k], now, "duplicate")
		}
		switch c.kind {
		case KindThreshold, KindRate:
			st.active, st.activeSince = true, a.StartedAt
		case KindAbsence:
			st.lastSeen = a.StartedAt.Add(-c.forDur)
		case KindOffline:
			st.offline, st.offlineSince = true, a.StartedAt.Add(-c.forDur)
		}
		if a.FiredAt != nil {
			st.fires = append(st.fires, *a.FiredAt)
		}
		e.states[k] = st
	}
}

func (e *Engine) restoreEnd(st *state, now time.Time, reason string) {
	if st.alert.State == StatePending {
		e.discard(st, now)
		return
	}
	e.resolve(st, now, reason)
}

// flushLoop writes alert changes as they come, and once a minute prunes
// the history and retries failed writes.
func (e *Engine) flushLoop(ctx context.Context) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.flush:
		case <-tick.C:
			e.mu.Lock()
			e.prune(time.Now(), true)
			e.mu.Unlock()
		}
		if err := e.flushNow(); err != nil {
			e.metrics.persistErrors.Inc()
			e.log.Error("alert state not written, retrying in a minute", "err", err)
		}
	}
}

// flushNow writes the changed alerts in one transaction.
func (e *Engine) flushNow() error {
	e.mu.Lock()
	e.prune(time.Now(), false)
	if len(e.dirty) == 0 {
		e.mu.Unlock()
		return nil
	}
	puts := make([]Alert, 0, len(e.dirty))
	var dels []string
	for id := range e.dirty {
		if a, ok := e.alerts[id]; ok {
			puts = append(puts, a.clone(true))
		} else {
			dels = append(dels, id)
		}
	}
	ids := maps.Clone(e.dirty)
	clear(e.dirty)
	e.mu.Unlock()

	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(alertsBucket)
		for i := range puts {
			v, err := json.Marshal(&puts[i])
			if err != nil {
				return err
			}
			if err := b.Put([]byte(puts[i].ID), v); err != nil {
				return err
			}
		}
		for _, id := range dels {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.mu.Lock()
		maps.Copy(e.dirty, ids)
		e.mu.Unlock()
		return fmt.Errorf("write alerts: %w", err)
	}
	return nil
}

// prune drops resolved alerts beyond MaxResolved (the oldest first) and,
// when byAge, those resolved longer ago than Retention. Called with mu
// held.
func (e *Engine) prune(now time.Time, byAge bool) {
	if !byAge && e.resolved <= e.cfg.MaxResolved {
		return
	}
	var old []*Alert
	for _, a := range e.alerts {
		if a.State == StateResolved {
			old = append(old, a)
		}
	}
	slices.SortFunc(old, func(a, b *Alert) int { return a.UpdatedAt.Compare(b.UpdatedAt) })
	for i, a := range old {
		if len(old)-i <= e.cfg.MaxResolved && now.Sub(a.UpdatedAt) <= e.cfg.Retention {
			break
		}
		delete(e.alerts, a.ID)
		e.dirty[a.ID] = struct{}{}
		e.resolved--
	}
}
