package rules

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"sync/atomic"
	"time"
)

// Alert states.
const (
	StatePending  = "pending"
	StateFiring   = "firing"
	StateResolved = "resolved"
	// StateInactive appears only in events: a pending alert whose condition
	// cleared before it fired, which is then forgotten.
	StateInactive = "inactive"
)

// Changes an alert goes through, as recorded in its history and sent on the
// live stream.
const (
	ChangePending      = "pending"      // condition true, waiting for its for duration
	ChangeFiring       = "firing"       // the alert fired
	ChangeAcknowledged = "acknowledged" // an operator acknowledged it
	ChangeFlapping     = "flapping"     // it fired too often: later flaps are absorbed
	ChangeResolved     = "resolved"     // it is over
	ChangeInactive     = "inactive"     // a pending alert whose condition cleared before firing; not kept
	ChangeUnsilenced   = "unsilenced"   // its rule's silence ended while it was firing
)

// maxHistory bounds the transitions kept per alert.
const maxHistory = 32

// Alert is one occurrence of a rule's condition on one device. There is at
// most one pending or firing alert per (rule, device); once resolved it
// stays in the history and a new occurrence gets a new alert.
type Alert struct {
	ID         string `json:"id"`
	RuleID     string `json:"rule_id"`
	RuleName   string `json:"rule_name"`
	DeviceID   string `json:"device_id"`
	DeviceType string `json:"device_type,omitempty"`
	Severity   string `json:"severity"`
	State      string `json:"state"`
	// Kind and Field say what the rule watches.
	Kind  string `json:"kind"`
	Field string `json:"field,omitempty"`
	// Value is the latest value that decided the alert: the reading
	// (threshold), the change over the window (rate).
	Value   any    `json:"value,omitempty"`
	Summary string `json:"summary"`
	// StartedAt is when the condition became true (the alert went pending,
	// or fired directly).
	StartedAt     time.Time  `json:"started_at"`
	FiredAt       *time.Time `json:"fired_at,omitempty"`
	ResolvedAt    *time.Time `json:"resolved_at,omitempty"`
	ResolveReason string     `json:"resolve_reason,omitempty"`
	AckedAt       *time.Time `json:"acked_at,omitempty"`
	AckedBy       string     `json:"acked_by,omitempty"`
	AckComment    string     `json:"ack_comment,omitempty"`
	// Flapping is set when the alert fired FlapThreshold times within the
	// flap window; it then resolves only after its condition stays clear
	// for the flap hold.
	Flapping bool `json:"flapping,omitempty"`
	// Silenced is true while the rule is silenced: the alert is tracked
	// and shown but not delivered to webhooks.
	Silenced bool `json:"silenced"`
	// Targets are the rule's webhook IDs, when it names any.
	Targets   []string     `json:"targets,omitempty"`
	UpdatedAt time.Time    `json:"updated_at"`
	History   []Transition `json:"history,omitempty"`
}

// Transition is one change of an alert.
type Transition struct {
	Change string    `json:"change"`
	At     time.Time `json:"at"`
	Value  any       `json:"value,omitempty"`
	By     string    `json:"by,omitempty"`
	Note   string    `json:"note,omitempty"`
}

// Event is the payload of an alert message on the live stream and in
// webhooks: what changed, and the alert after the change (without its
// history).
type Event struct {
	Change string `json:"change"`
	Alert
}

// active reports whether the alert is pending or firing.
func (a *Alert) active() bool { return a.State == StatePending || a.State == StateFiring }

// record appends a transition, dropping the oldest past maxHistory (the
// first, pending or firing, is kept).
func (a *Alert) record(tr Transition) {
	a.UpdatedAt = tr.At
	if len(a.History) >= maxHistory {
		a.History = append(a.History[:1], a.History[2:]...)
	}
	a.History = append(a.History, tr)
}

// clone returns a deep copy, safe to hand out while the engine changes a.
func (a *Alert) clone(withHistory bool) Alert {
	c := *a
	c.Targets = slices.Clone(a.Targets)
	c.History = nil
	if withHistory {
		c.History = slices.Clone(a.History)
	}
	return c
}

// newAlertID returns a time-ordered ID: 16 hex digits of Unix nanoseconds
// (strictly increasing: last is the previous ID's) and 8 random ones.
func newAlertID(now time.Time, last *atomic.Int64) string {
	var n int64
	for {
		prev := last.Load()
		n = max(now.UnixNano(), prev+1)
		if last.CompareAndSwap(prev, n) {
			break
		}
	}
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// Filter selects alerts; empty fields select everything.
type Filter struct {
	// States lists the wanted states (pending, firing, resolved).
	States   []string
	Severity string
	DeviceID string
	RuleID   string
	// Limit bounds the answer; 0 means no bound.
	Limit int
}

func (f Filter) match(a *Alert) bool {
	return (len(f.States) == 0 || slices.Contains(f.States, a.State)) &&
		(f.Severity == "" || f.Severity == a.Severity) &&
		(f.DeviceID == "" || f.DeviceID == a.DeviceID) &&
		(f.RuleID == "" || f.RuleID == a.RuleID)
}
