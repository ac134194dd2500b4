package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
)

// ParamType is the JSON type of a command parameter.
type ParamType string

// Parameter types a schema may declare.
const (
	ParamNumber  ParamType = "number"
	ParamInteger ParamType = "integer"
	ParamString  ParamType = "string"
	ParamBoolean ParamType = "boolean"
	ParamObject  ParamType = "object"
	ParamArray   ParamType = "array"
)

// ParamSpec describes one parameter of a command. Its keywords are those of
// JSON Schema, so the declaration reads familiar and maps onto it.
type ParamSpec struct {
	Type        ParamType `json:"type"`
	Description string    `json:"description,omitempty"`
	Required    bool      `json:"required,omitempty"`
	Minimum     *float64  `json:"minimum,omitempty"`
	Maximum     *float64  `json:"maximum,omitempty"`
	Enum        []any     `json:"enum,omitempty"`
	MaxLength   int       `json:"max_length,omitempty"`
	Unit        string    `json:"unit,omitempty"`
}

// CommandSpec describes one command a device type accepts.
type CommandSpec struct {
	Description string               `json:"description,omitempty"`
	Params      map[string]ParamSpec `json:"params,omitempty"`
}

// CommandSchema is the set of commands a device type declares. When a type
// has a schema, a command must be one of them and its parameters must match:
// no unknown parameter, every required one, the right types and bounds.
type CommandSchema struct {
	Commands map[string]CommandSpec `json:"commands"`
}

var commandNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)

// Validate checks the schema itself.
func (s CommandSchema) Validate() error {
	if len(s.Commands) == 0 {
		return &devices.ValidationError{Msg: "commands: declare at least one command"}
	}
	if len(s.Commands) > 256 {
		return &devices.ValidationError{Msg: "commands: at most 256"}
	}
	for name, c := range s.Commands {
		if !commandNamePattern.MatchString(name) {
			return &devices.ValidationError{Msg: fmt.Sprintf("command %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter", name)}
		}
		if len(c.Params) > 64 {
			return &devices.ValidationError{Msg: fmt.Sprintf("command %q: at most 64 parameters", name)}
		}
		for p, spec := range c.Params {
			if p == "" || len(p) > 64 {
				return &devices.ValidationError{Msg: fmt.Sprintf("command %q: parameter names are 1-64 bytes", name)}
			}
			switch spec.Type {
			case ParamNumber, ParamInteger, ParamString, ParamBoolean, ParamObject, ParamArray:
			default:
				return &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: type %q: use number, integer, string, boolean, object or array", name, p, spec.Type)}
			}
			if spec.Minimum != nil && spec.Maximum != nil && *spec.Minimum > *spec.Maximum {
				return &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: minimum above maximum", name, p)}
			}
			if spec.MaxLength < 0 {
				return &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: max_length must not be negative", name, p)}
			}
		}
	}
	return nil
}

// Check validates a command's name and parameters (a JSON object, or empty
// for none) against the schema. The error is a *ValidationError that says
// what is wrong, fit to show an operator.
func (s CommandSchema) Check(name string, params json.RawMessage) error {
	spec, ok := s.Commands[name]
	if !ok {
		names := make([]string, 0, len(s.Commands))
		for n := range s.Commands {
			names = append(names, n)
		}
		sort.Strings(names)
		return &devices.ValidationError{Msg: fmt.Sprintf("unknown command %q; this device type accepts %s", name, strings.Join(names, ", "))}
	}
	values, err := decodeParams(params)
	if err != nil {
		return err
	}
	for p := range values {
		if _, ok := spec.Params[p]; !ok {
			return &devices.ValidationError{Msg: fmt.Sprintf("%s: unknown parameter %q", name, p)}
		}
	}
	ps := make([]string, 0, len(spec.Params))
	for p := range spec.Params {
		ps = append(ps, p)
	}
	sort.Strings(ps) // report the first problem in a stable order
	for _, p := range ps {
		ps := spec.Params[p]
		v, present := values[p]
		if !present {
			if ps.Required {
				return &devices.ValidationError{Msg: fmt.Sprintf("%s: missing required parameter %q (%s)", name, p, ps.Type)}
			}
			continue
		}
		if err := ps.check(v); err != nil {
			return &devices.ValidationError{Msg: fmt.Sprintf("%s: parameter %q: %v", name, p, err)}
		}
	}
	return nil
}

func (ps ParamSpec) check(v any) error {
	switch ps.Type {
	case ParamNumber, ParamInteger:
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("want a %s, got %s", ps.Type, jsonKind(v))
		}
		f, err := n.Float64()
		if err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("%s is not a finite number", n)
		}
		if ps.Type == ParamInteger && f != math.Trunc(f) {
			return fmt.Errorf("want an integer, got %s", n)
		}
		if ps.Minimum != nil && f < *ps.Minimum {
			return fmt.Errorf("%s is below the minimum %g", n, *ps.Minimum)
		}
		if ps.Maximum != nil && f > *ps.Maximum {
			return fmt.Errorf("%s is above the maximum %g", n, *ps.Maximum)
		}
	case ParamString:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s", jsonKind(v))
		}
		if ps.MaxLength > 0 && len([]rune(s)) > ps.MaxLength {
			return fmt.Errorf("longer than %d characters", ps.MaxLength)
		}
	case ParamBoolean:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want a boolean, got %s", jsonKind(v))
		}
	case ParamObject:
		if _, ok := v.(map[string]any); !ok {
			return fmt.Errorf("want an object, got %s", jsonKind(v))
		}
	case ParamArray:
		if _, ok := v.([]any); !ok {
			return fmt.Errorf("want an array, got %s", jsonKind(v))
		}
	}
	if len(ps.Enum) > 0 && !slices.ContainsFunc(ps.Enum, func(e any) bool { return jsonEqual(normalize(e), v) }) {
		b, _ := json.Marshal(ps.Enum)
		return fmt.Errorf("must be one of %s", b)
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// decodeParams decodes a command's parameters, which must be a JSON object
// (or empty, meaning none). Numbers stay json.Number.
func decodeParams(params json.RawMessage) (map[string]any, error) {
	if len(bytes.TrimSpace(params)) == 0 || bytes.Equal(bytes.TrimSpace(params), []byte("null")) {
		return map[string]any{}, nil
	}
	v, err := decodeJSON(params)
	if err != nil {
		return nil, &devices.ValidationError{Msg: "params: " + err.Error()}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &devices.ValidationError{Msg: "params: must be a JSON object"}
	}
	return m, nil
}

// decodeJSON decodes one JSON value with numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

// normalize turns a value decoded without UseNumber (float64) into the
// json.Number form used for comparison.
func normalize(v any) any {
	switch x := v.(type) {
	case float64:
		return json.Number(fmt.Sprint(x))
	case int:
		return json.Number(fmt.Sprint(x))
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	}
	return v
}

// jsonEqual compares two decoded JSON values; numbers compare by value, so
// 22 equals 22.0.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, err1 := x.Float64()
		fy, err2 := y.Float64()
		return err1 == nil && err2 == nil && fx == fy
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

var schemaBucket = []byte("command_schemas")

// Schemas holds the command schemas of device types, persisted in the
// hub's state database and cached in memory. Safe for concurrent use.
type Schemas struct {
	db *bolt.DB
	mu sync.RWMutex
	by map[string]CommandSchema
}

// NewSchemas loads the schemas from their bucket in db.
func NewSchemas(db *bolt.DB) (*Schemas, error) {
	s := &Schemas{db: db, by: map[string]CommandSchema{}}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(schemaBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var cs CommandSchema
			if err := json.Unmarshal(v, &cs); err != nil {
				return fmt.Errorf("schema of %q: %w", k, err)
			}
			s.by[string(k)] = cs
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load command schemas: %w", err)
	}
	return s, nil
}

// Get returns the command schema of a device type.
func (s *Schemas) Get(deviceType string) (CommandSchema, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cs, ok := s.by[deviceType]
	return cs, ok
}

// List returns every declared schema by device type.
func (s *Schemas) List() map[string]CommandSchema {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]CommandSchema, len(s.by))
	for k, v := range s.by {
		out[k] = v
	}
	return out
}

// Put declares (or replaces) the command schema of a device type.
func (s *Schemas) Put(deviceType string, cs CommandSchema) error {
	if !devices.ValidType(deviceType) {
		return &devices.ValidationError{Msg: fmt.Sprintf("type %q: use 1-64 lower-case letters, digits, '_' or '-', starting with a letter", deviceType)}
	}
	if err := cs.Validate(); err != nil {
		return err
	}
	v, err := json.Marshal(cs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(schemaBucket).Put([]byte(deviceType), v) }); err != nil {
		return fmt.Errorf("store command schema: %w", err)
	}
	s.by[deviceType] = cs
	return nil
}

// Delete removes the schema of a device type; its commands are then no
// longer validated by the hub.
func (s *Schemas) Delete(deviceType string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.by[deviceType]; !ok {
		return devices.ErrNotFound
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(schemaBucket).Delete([]byte(deviceType)) }); err != nil {
		return fmt.Errorf("delete command schema: %w", err)
	}
	delete(s.by, deviceType)
	return nil
}

// Check validates a command for a device type: against the type's schema
// when one is declared, else only the name's form and that params is an
// object.
func (s *Schemas) Check(deviceType, name string, params json.RawMessage) error {
	if !commandNamePattern.MatchString(name) {
		return &devices.ValidationError{Msg: fmt.Sprintf("name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter", name)}
	}
	cs, ok := s.Get(deviceType)
	if !ok {
		_, err := decodeParams(params)
		return err
	}
	return cs.Check(name, params)
}
