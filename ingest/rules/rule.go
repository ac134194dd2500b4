// Package rules is the alert rule engine: rules on device readings and
// presence (threshold with duration and hysteresis, rate of change, absence
// of data, device offline), evaluated incrementally as readings arrive, and
// the alerts they raise with their lifecycle (pending, firing, resolved,
// acknowledged), persisted in the hub's state database.
package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Condition kinds.
const (
	KindThreshold = "threshold"
	KindRate      = "rate"
	KindAbsence   = "absence"
	KindOffline   = "offline"
)

// Severities, from the most to the least urgent.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Sources of a rule.
const (
	SourceAPI    = "api"
	SourceConfig = "config"
)

// maxDuration bounds every duration of a rule, so that deadlines never
// overflow.
const maxDuration = 366 * 24 * time.Hour

var (
	idPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	fieldPattern = regexp.MustCompile(`^[^\x00-\x1f]{1,128}$`)
)

// Spec is a rule as an operator writes it, in the API or in the config file.
// Durations are strings such as "300ms", "5m" or "1h30m".
type Spec struct {
	// ID names the rule in URLs and alerts. Optional in the API (one is
	// generated), required in the config file so that alerts keep their rule
	// across restarts.
	ID          string    `json:"id,omitempty" yaml:"id"`
	Name        string    `json:"name" yaml:"name"`
	Description string    `json:"description,omitempty" yaml:"description"`
	Scope       Scope     `json:"scope" yaml:"scope"`
	Condition   Condition `json:"condition" yaml:"condition"`
	// Severity is critical, warning (the default) or info.
	Severity string `json:"severity,omitempty" yaml:"severity"`
	// Notify lists webhook IDs. When set, the rule's alerts are delivered
	// only to those webhooks; when empty, to every webhook subscribed to
	// alert events.
	Notify []string `json:"notify,omitempty" yaml:"notify"`
}

// Scope selects the devices a rule watches. Device names one device and
// excludes the others; Type and Labels may be combined (both must match).
// An empty scope watches every device.
type Scope struct {
	Device string `json:"device,omitempty" yaml:"device"`
	Type   string `json:"type,omitempty" yaml:"type"`
	// Labels is a label selector such as "room=kitchen,floor in (1,2),!spare".
	Labels string `json:"labels,omitempty" yaml:"labels"`
}

// Condition is what makes a rule's alert fire.
type Condition struct {
	// Kind is threshold, rate, absence or offline.
	Kind string `json:"kind" yaml:"kind"`
	// Field is the reading field (threshold, rate; optional for absence,
	// where empty means any reading at all).
	Field string `json:"field,omitempty" yaml:"field"`
	// Op compares the field (threshold: >, >=, <, <=, ==, !=) or its change
	// over Window (rate: >, >=, <, <=) with Value.
	Op string `json:"op,omitempty" yaml:"op"`
	// Value is a number; == and != also take a boolean or a string.
	Value any `json:"value,omitempty" yaml:"value"`
	// For is how long the condition must hold before the alert fires
	// (threshold, rate), or how long data must be missing (absence) or the
	// device offline (offline).
	For string `json:"for,omitempty" yaml:"for"`
	// ClearBelow (with > or >=) and ClearAbove (with < or <=) set a separate
	// threshold for the alert to clear: hysteresis.
	ClearBelow *float64 `json:"clear_below,omitempty" yaml:"clear_below"`
	ClearAbove *float64 `json:"clear_above,omitempty" yaml:"clear_above"`
	// Window is the span over which a rate rule measures the change.
	Window string `json:"window,omitempty" yaml:"window"`
}

// Rule is a stored rule: the spec and what the hub records about it.
type Rule struct {
	Spec
	// Source is "api" or "config"; rules from the config file cannot be
	// changed through the API.
	Source        string     `json:"source"`
	CreatedAt     time.Time  `json:"created_at"`
	CreatedBy     string     `json:"created_by,omitempty"`
	UpdatedAt     time.Time  `json:"updated_at"`
	UpdatedBy     string     `json:"updated_by,omitempty"`
	SilencedUntil *time.Time `json:"silenced_until,omitempty"`
	SilencedBy    string     `json:"silenced_by,omitempty"`
}

// silenced reports whether the rule's alerts are silenced at now.
func (r *Rule) silenced(now time.Time) bool {
	return r.SilencedUntil != nil && now.Before(*r.SilencedUntil)
}

// ValidationError says what is wrong with a rule and where: Path is the
// field, such as "condition.for".
type ValidationError struct {
	Path string
	Msg  string
}

func (e *ValidationError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func invalid(path, format string, args ...any) error {
	return &ValidationError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ParseRule reads a rule spec from JSON, strictly (unknown fields and
// trailing data are errors), and validates it.
func ParseRule(b []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, &ValidationError{Msg: "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	if dec.More() {
		return Spec{}, &ValidationError{Msg: "invalid JSON: unexpected data after the rule"}
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Validate checks the spec without side effects; the error is a
// *ValidationError naming the field at fault.
func (s Spec) Validate() error {
	_, err := compileSpec(s)
	return err
}

// ValidateDeclared checks the rules of the config file: each must be valid,
// have an ID and a unique one. Errors say which rule: rules[2] (id "hot").
func ValidateDeclared(specs []Spec) error {
	var errs []error
	seen := map[string]int{}
	for i, s := range specs {
		where := fmt.Sprintf("rules[%d]", i)
		if s.ID != "" {
			where += fmt.Sprintf(" (id %q)", s.ID)
		}
		if s.ID == "" {
			errs = append(errs, fmt.Errorf("%s: id: required for rules in the config file", where))
			continue
		}
		if j, dup := seen[s.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id: already used by rules[%d]", where, j))
			continue
		}
		seen[s.ID] = i
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errors.Join(errs...)
}

// op is a comparison.
type op uint8

const (
	opGT op = iota + 1
	opGE
	opLT
	opLE
	opEQ
	opNE
)

var ops = map[string]op{">": opGT, ">=": opGE, "<": opLT, "<=": opLE, "==": opEQ, "!=": opNE}

func (o op) String() string {
	for s, v := range ops {
		if v == o {
			return s
		}
	}
	return "?"
}

func (o op) num(a, b float64) bool {
	switch o {
	case opGT:
		return a > b
	case opGE:
		return a >= b
	case opLT:
		return a < b
	case opLE:
		return a <= b
	case opEQ:
		return a == b
	default:
		return a != b
	}
}

// parseDuration reads a rule duration; required says whether it must be set.
func parseDuration(path, s string, required bool) (time.Duration, error) {
	if s == "" {
		if required {
			return 0, invalid(path, "required, a duration such as 300ms, 5m or 1h30m")
		}
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalid(path, "%q is not a duration such as 300ms, 5m or 1h30m", s)
	}
	switch {
	case d < 0:
		return 0, invalid(path, "must not be negative")
	case d == 0 && required:
		return 0, invalid(path, "must be longer than 0")
	case d > maxDuration:
		return 0, invalid(path, "at most %v", maxDuration)
	}
	return d, nil
}

// compileSpec validates s and returns its evaluable form.
func compileSpec(s Spec) (*compiled, error) {
	c := &compiled{}
	if s.ID != "" && !idPattern.MatchString(s.ID) {
		return nil, invalid("id", "%q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.ID)
	}
	if n := strings.TrimSpace(s.Name); n == "" || len(s.Name) > 200 {
		return nil, invalid("name", "required, at most 200 characters")
	}
	if len(s.Description) > 2000 {
		return nil, invalid("description", "at most 2000 characters")
	}
	switch s.Severity {
	case "", SeverityCritical, SeverityWarning, SeverityInfo:
	default:
		return nil, invalid("severity", "%q: use critical, warning or info", s.Severity)
	}
	if len(s.Notify) > 16 {
		return nil, invalid("notify", "at most 16 webhooks")
	}
	for i, id := range s.Notify {
		if !idPattern.MatchString(id) {
			return nil, invalid(fmt.Sprintf("notify[%d]", i), "%q is not a webhook ID", id)
		}
	}
	if err := c.compileScope(s.Scope); err != nil {
		return nil, err
	}
	if err := c.compileCondition(s.Condition); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *compiled) compileScope(sc Scope) error {
	if sc.Device != "" && (sc.Type != "" || sc.Labels != "") {
		return invalid("scope", "device names one device; do not combine it with type or labels")
	}
	if sc.Device != "" && !deviceIDPattern.MatchString(sc.Device) {
		return invalid("scope.device", "%q is not a device ID", sc.Device)
	}
	if sc.Type != "" && !typePattern.MatchString(sc.Type) {
		return invalid("scope.type", "%q is not a device type (lower-case letters, digits, '_' or '-')", sc.Type)
	}
	if sc.Labels != "" {
		sel, err := ParseSelector(sc.Labels)
		if err != nil {
			return invalid("scope.labels", "%v", err)
		}
		c.sel = sel
	}
	return nil
}

func (c *compiled) compileCondition(cd Condition) error {
	var err error
	c.field = cd.Field
	switch cd.Kind {
	case KindThreshold, KindRate:
		if cd.Field == "" {
			return invalid("condition.field", "required for a %s rule", cd.Kind)
		}
		if !fieldPattern.MatchString(cd.Field) {
			return invalid("condition.field", "1-128 characters without control characters")
		}
		o, ok := ops[cd.Op]
		if !ok {
			return invalid("condition.op", "%q: use >, >=, <, <=, == or !=", cd.Op)
		}
		c.op = o
		if cd.Kind == KindRate && (o == opEQ || o == opNE) {
			return invalid("condition.op", "a rate rule compares the change with >, >=, < or <=")
		}
		if err := c.compileValue(cd); err != nil {
			return err
		}
		if c.forDur, err = parseDuration("condition.for", cd.For, false); err != nil {
			return err
		}
		if cd.Kind == KindRate {
			if cd.ClearBelow != nil || cd.ClearAbove != nil {
				return invalid("condition", "clear_below and clear_above apply to threshold rules only")
			}
			if c.window, err = parseDuration("condition.window", cd.Window, true); err != nil {
				return err
			}
		} else {
			if cd.Window != "" {
				return invalid("condition.window", "applies to rate rules only")
			}
			if err := c.compileHysteresis(cd); err != nil {
				return err
			}
		}
	case KindAbsence, KindOffline:
		if cd.Kind == KindOffline && cd.Field != "" {
			return invalid("condition.field", "an offline rule watches the connection, not a field")
		}
		if cd.Field != "" && !fieldPattern.MatchString(cd.Field) {
			return invalid("condition.field", "1-128 characters without control characters")
		}
		if cd.Op != "" || cd.Value != nil || cd.Window != "" || cd.ClearBelow != nil || cd.ClearAbove != nil {
			return invalid("condition", "an %s rule takes only field and for", cd.Kind)
		}
		if c.forDur, err = parseDuration("condition.for", cd.For, true); err != nil {
			return err
		}
	case "":
		return invalid("condition.kind", "required: threshold, rate, absence or offline")
	default:
		return invalid("condition.kind", "%q: use threshold, rate, absence or offline", cd.Kind)
	}
	c.kind = cd.Kind
	return nil
}

func (c *compiled) compileValue(cd Condition) error {
	switch v := cd.Value.(type) {
	case nil:
		return invalid("condition.value", "required")
	case float64:
		c.num = v
	case int:
		c.num = float64(v)
	case bool:
		c.bval, c.vkind = v, valueBool
	case string:
		if len(v) > 1024 {
			return invalid("condition.value", "a string of at most 1024 bytes")
		}
		c.sval, c.vkind = v, valueString
	default:
		return invalid("condition.value", "must be a number, true, false or a string")
	}
	if c.vkind == valueNumber && (math.IsNaN(c.num) || math.IsInf(c.num, 0)) {
		return invalid("condition.value", "must be a finite number")
	}
	if c.vkind != valueNumber && c.op != opEQ && c.op != opNE {
		return invalid("condition.value", "%s compares numbers; only == and != take a boolean or a string", c.op)
	}
	return nil
}

func (c *compiled) compileHysteresis(cd Condition) error {
	switch {
	case cd.ClearBelow != nil && cd.ClearAbove != nil:
		return invalid("condition", "set clear_below or clear_above, not both")
	case cd.ClearBelow != nil:
		v := *cd.ClearBelow
		if c.op != opGT && c.op != opGE {
			return invalid("condition.clear_below", "goes with > or >= (use clear_above with < or <=)")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v > c.num {
			return invalid("condition.clear_below", "must be a number not above value %v", c.num)
		}
		c.clear, c.clearBelow = v, true
	case cd.ClearAbove != nil:
		v := *cd.ClearAbove
		if c.op != opLT && c.op != opLE {
			return invalid("condition.clear_above", "goes with < or <= (use clear_below with > or >=)")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < c.num {
			return invalid("condition.clear_above", "must be a number not below value %v", c.num)
		}
		c.clear, c.clearAbove = v, true
	}
	return nil
}
