package rules

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Rules returns every rule, ordered by ID.
func (e *Engine) Rules() []Rule {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	out := make([]Rule, 0, len(e.rules))
	for _, r := range e.rules {
		out = append(out, copyRule(r))
	}
	slices.SortFunc(out, func(a, b Rule) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Rule returns one rule.
func (e *Engine) Rule(id string) (Rule, bool) {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	r, ok := e.rules[id]
	if !ok {
		return Rule{}, false
	}
	return copyRule(r), true
}

func copyRule(r *Rule) Rule {
	c := *r
	c.Notify = slices.Clone(r.Notify)
	return c
}

// newRuleID returns a random rule ID.
func newRuleID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "r-" + hex.EncodeToString(b)
}

// CreateRule validates and stores a rule; by names who created it. The ID
// is generated unless the spec has one. Errors: *ValidationError,
// ErrExists.
func (e *Engine) CreateRule(s Spec, by string) (Rule, error) {
	if err := s.Validate(); err != nil {
		return Rule{}, err
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	if s.ID == "" {
		s.ID = newRuleID()
	} else if _, ok := e.rules[s.ID]; ok {
		return Rule{}, ErrExists
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	r := &Rule{Spec: s, Source: SourceAPI, CreatedAt: now, CreatedBy: by, UpdatedAt: now, UpdatedBy: by}
	if err := e.commit(r, ""); err != nil {
		return Rule{}, err
	}
	return copyRule(r), nil
}

// UpdateRule replaces a rule's spec. A change of scope or condition
// resolves the rule's alerts ("rule changed") and starts afresh; a change of
// name, severity or targets keeps them. Errors: *ValidationError,
// ErrNotFound, ErrDeclared.
func (e *Engine) UpdateRule(id string, s Spec, by string) (Rule, error) {
	if s.ID != "" && s.ID != id {
		return Rule{}, invalid("id", "%q differs from the rule's ID %q in the URL", s.ID, id)
	}
	s.ID = id
	if err := s.Validate(); err != nil {
		return Rule{}, err
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	old, ok := e.rules[id]
	switch {
	case !ok:
		return Rule{}, ErrNotFound
	case old.Source == SourceConfig:
		return Rule{}, ErrDeclared
	}
	r := copyRule(old)
	r.Spec = s
	r.UpdatedAt, r.UpdatedBy = time.Now().UTC().Truncate(time.Millisecond), by
	if err := e.commit(&r, ""); err != nil {
		return Rule{}, err
	}
	return copyRule(&r), nil
}

// DeleteRule removes a rule; its firing alerts resolve ("rule deleted").
// Errors: ErrNotFound, ErrDeclared.
func (e *Engine) DeleteRule(id string) error {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	old, ok := e.rules[id]
	switch {
	case !ok:
		return ErrNotFound
	case old.Source == SourceConfig:
		return ErrDeclared
	}
	return e.commit(nil, id)
}

// SilenceRule silences a rule until the given time, or ends its silence
// when until is zero or past. A silenced rule's alerts are still tracked
// and shown, marked silenced, but not delivered to webhooks; when the
// silence ends, its firing alerts are announced again. Rules of the config
// file can be silenced too. Errors: ErrNotFound.
func (e *Engine) SilenceRule(id string, until time.Time, by string) (Rule, error) {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	old, ok := e.rules[id]
	if !ok {
		return Rule{}, ErrNotFound
	}
	r := copyRule(old)
	if until.IsZero() || !until.After(time.Now()) {
		r.SilencedUntil, r.SilencedBy = nil, ""
	} else {
		u := until.UTC()
		r.SilencedUntil, r.SilencedBy = &u, by
	}
	if err := e.commit(&r, ""); err != nil {
		return Rule{}, err
	}
	return copyRule(&r), nil
}

// commit writes r (or deletes the rule del) and installs the new rule set.
// Called with rulesMu held.
func (e *Engine) commit(r *Rule, del string) error {
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(rulesBucket)
		if r == nil {
			return b.Delete([]byte(del))
		}
		return putRule(b, r)
	})
	if err != nil {
		return fmt.Errorf("store rule: %w", err)
	}
	rules := maps.Clone(e.rules)
	if r == nil {
		delete(rules, del)
	} else {
		rules[r.ID] = r
	}
	e.rules = rules
	e.install(time.Now())
	return nil
}

// Alerts returns the alerts that f selects, newest first, without their
// history. Shard locks are held to pick the alerts and to copy the ones
// returned, not to sort them, so a long history does not stall ingest.
func (e *Engine) Alerts(f Filter) []Alert {
	type picked struct {
		sh *shard
		a  *Alert
	}
	var ps []picked
	e.eachShard(func(sh *shard) {
		for _, a := range sh.alerts {
			if f.match(a) {
				ps = append(ps, picked{sh, a})
			}
		}
	})
	// An alert's ID never changes, so sorting needs no lock.
	slices.SortFunc(ps, func(a, b picked) int { return strings.Compare(b.a.ID, a.a.ID) })
	if f.Limit > 0 && len(ps) > f.Limit {
		ps = ps[:f.Limit]
	}
	now := time.Now()
	out := make([]Alert, 0, len(ps))
	for _, p := range ps {
		p.sh.mu.Lock()
		if f.match(p.a) { // it may have changed meanwhile
			c := p.a.clone(false)
			c.Silenced = p.a.active() && e.silenced(p.a.RuleID, now)
			out = append(out, c)
		}
		p.sh.mu.Unlock()
	}
	return out
}

// find returns the shard holding an alert, with the shard locked.
func (e *Engine) find(id string) (*shard, *Alert) {
	for _, sh := range e.shards {
		sh.mu.Lock()
		if a, ok := sh.alerts[id]; ok {
			return sh, a
		}
		sh.mu.Unlock()
	}
	return nil, nil
}

// Alert returns one alert with its history.
func (e *Engine) Alert(id string) (Alert, bool) {
	sh, a := e.find(id)
	if a == nil {
		return Alert{}, false
	}
	defer sh.mu.Unlock()
	c := a.clone(true)
	c.Silenced = a.active() && e.silenced(a.RuleID, time.Now())
	return c, true
}

// Ack records that an operator (by) acknowledged a firing alert, with an
// optional comment. Acknowledging again changes nothing and returns the
// alert as it is. Errors: ErrAlertNotFound, ErrNotFiring.
func (e *Engine) Ack(id, by, comment string) (Alert, error) {
	if len(comment) > 1000 {
		return Alert{}, invalid("comment", "at most 1000 characters")
	}
	sh, a := e.find(id)
	if a == nil {
		return Alert{}, ErrAlertNotFound
	}
	now := time.Now()
	if a.State != StateFiring {
		sh.mu.Unlock()
		return Alert{}, fmt.Errorf("alert is %s: %w", a.State, ErrNotFiring)
	}
	if a.AckedAt == nil {
		t := now.UTC()
		a.AckedAt, a.AckedBy, a.AckComment = &t, by, comment
		a.record(Transition{Change: ChangeAcknowledged, At: now, By: by, Note: comment})
		sh.changed(a, ChangeAcknowledged, now)
	}
	c := a.clone(true)
	c.Silenced = e.silenced(a.RuleID, now)
	sh.unlockAndPublish()
	return c, nil
}
