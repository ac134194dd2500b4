package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
)

// The engine's buckets in the hub's state database: rules by ID, alerts
// (active and history) by ID.
var (
	rulesBucket  = []byte("rules")
	alertsBucket = []byte("alerts")
)

// load reads the rules and alerts and merges the declared rules. It
// returns the alerts, and the IDs of rules whose scope or condition changed
// since the last run, so that their alerts restart. Unreadable alerts are
// deleted.
func (e *Engine) load(declared []Spec, now time.Time) (alerts []*Alert, changed map[string]bool, err error) {
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
		var bad [][]byte
		if err := ab.ForEach(func(k, v []byte) error {
			a := &Alert{}
			if err := json.Unmarshal(v, a); err != nil || a.ID != string(k) {
				e.log.Error("unreadable alert deleted", "alert_id", string(k), "err", err)
				bad = append(bad, bytes.Clone(k))
				return nil
			}
			alerts = append(alerts, a)
			return nil
		}); err != nil {
			return err
		}
		for _, k := range bad {
			if err := ab.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load rules and alerts: %w", err)
	}
	return alerts, changed, nil
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

// install builds the index from e.rules, applies it to every shard (see
// shard.apply) and updates the silences. e.rules must not change meanwhile
// (rulesMu, or New before anything runs).
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

	var ended []string
	wake := false
	e.silMu.Lock()
	for id, r := range e.rules {
		if r.SilencedUntil != nil && now.Before(*r.SilencedUntil) {
			if e.silences[id] != *r.SilencedUntil {
				e.silences[id], wake = *r.SilencedUntil, true
			}
		} else if _, ok := e.silences[id]; ok {
			delete(e.silences, id)
			ended = append(ended, id)
		}
	}
	for id := range e.silences {
		if cs[id] == nil {
			delete(e.silences, id)
		}
	}
	e.silMu.Unlock()
	if wake {
		signal(e.wakeSil)
	}

	var devs []devices.Device
	if e.started.Load() {
		for _, c := range x.timed {
			if old == nil || old.rules[c.rule.ID] == nil || old.rules[c.rule.ID].evalKey != c.evalKey {
				devs = e.devs.List()
				break
			}
		}
	}
	for _, sh := range e.shards {
		sh.mu.Lock()
		sh.apply(x, devs, now)
		sh.unlockAndPublish()
	}
	e.announceUnsilenced(ended, now)
}

// restore files the loaded alerts in their devices' shards and rebuilds the
// state of the pending and firing ones. Alerts of rules that are gone or
// changed resolve. Called by New, after install.
func (e *Engine) restore(alerts []*Alert, changed map[string]bool, now time.Time) {
	for _, a := range alerts {
		sh := e.shardOf(a.DeviceID)
		sh.mu.Lock()
		sh.restore(a, changed, now)
		sh.mu.Unlock()
	}
}

func (sh *shard) restore(a *Alert, changed map[string]bool, now time.Time) {
	sh.alerts[a.ID] = a
	if !a.active() {
		if a.State == StateResolved {
			sh.resolved++
		}
		return
	}
	sh.count(a.State, 1)
	c := sh.idx.rules[a.RuleID]
	k := stateKey{a.RuleID, a.DeviceID}
	st := &state{key: k, rule: c, devType: a.DeviceType, alert: a, value: a.Value, hidx: -1}
	switch {
	case c == nil:
		sh.restoreEnd(st, now, "rule deleted")
		return
	case changed[a.RuleID] || c.kind != a.Kind:
		sh.restoreEnd(st, now, "rule changed")
		return
	case sh.states[k] != nil:
		// Two active alerts for one pair cannot happen; if a damaged
		// database has them, the newer wins.
		if other := sh.states[k].alert; other.ID > a.ID {
			sh.restoreEnd(st, now, "duplicate")
			return
		}
		sh.restoreEnd(sh.states[k], now, "duplicate")
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
	sh.states[k] = st
}

func (sh *shard) restoreEnd(st *state, now time.Time, reason string) {
	if st.alert.State == StatePending {
		sh.discard(st, now)
		return
	}
	sh.resolve(st, now, reason)
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
			e.prune(time.Now(), true)
		}
		if err := e.flushNow(); err != nil {
			e.metrics.persistErrors.Inc()
			e.log.Error("alert state not written, retrying in a minute", "err", err)
		}
	}
}

// flushNow writes the changed alerts of every shard in one transaction.
func (e *Engine) flushNow() error {
	e.prune(time.Now(), false)
	var puts []Alert
	var dels []string
	var taken [nShards]map[string]struct{}
	for i, sh := range e.shards {
		sh.mu.Lock()
		if len(sh.dirty) > 0 {
			for id := range sh.dirty {
				if a, ok := sh.alerts[id]; ok {
					puts = append(puts, a.clone(true))
				} else {
					dels = append(dels, id)
				}
			}
			taken[i] = maps.Clone(sh.dirty)
			clear(sh.dirty)
		}
		sh.mu.Unlock()
	}
	if len(puts) == 0 && len(dels) == 0 {
		return nil
	}
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
		for i, sh := range e.shards {
			if taken[i] != nil {
				sh.mu.Lock()
				maps.Copy(sh.dirty, taken[i])
				sh.mu.Unlock()
			}
		}
		return fmt.Errorf("write alerts: %w", err)
	}
	return nil
}

// prune drops resolved alerts beyond MaxResolved (the oldest first) and,
// when byAge, those resolved longer ago than Retention.
func (e *Engine) prune(now time.Time, byAge bool) {
	total := 0
	e.eachShard(func(sh *shard) { total += sh.resolved })
	if !byAge && total <= e.cfg.MaxResolved {
		return
	}
	type kept struct {
		sh *shard
		a  *Alert
	}
	var old []kept
	e.eachShard(func(sh *shard) {
		for _, a := range sh.alerts {
			if a.State == StateResolved {
				old = append(old, kept{sh, a})
			}
		}
	})
	// A resolved alert never changes again: sorting needs no lock.
	slices.SortFunc(old, func(a, b kept) int { return a.a.UpdatedAt.Compare(b.a.UpdatedAt) })
	for i, k := range old {
		if len(old)-i <= e.cfg.MaxResolved && now.Sub(k.a.UpdatedAt) <= e.cfg.Retention {
			break
		}
		k.sh.mu.Lock()
		if k.sh.alerts[k.a.ID] == k.a {
			delete(k.sh.alerts, k.a.ID)
			k.sh.dirty[k.a.ID] = struct{}{}
			k.sh.resolved--
		}
		k.sh.mu.Unlock()
	}
}
