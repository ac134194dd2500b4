package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/kv"
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

// ParamSpec describes one parameter of a command in the short form. Its
// keywords are those of JSON Schema (max_length is maxLength, required is
// the parent's required list), and it is checked as the JSON Schema it
// stands for.
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

// CommandSpec describes one command a device type accepts. Its parameters
// are declared in one of two ways: Params, the short form (one ParamSpec
// per parameter), or ParamsSchema, a JSON Schema of the parameters object
// (draft 2020-12 unless its $schema names another draft) for what the short
// form cannot say: patterns, formats, nested objects, oneOf, $defs. Without
// either the command takes no parameters.
type CommandSpec struct {
	Description  string               `json:"description,omitempty"`
	Params       map[string]ParamSpec `json:"params,omitempty"`
	ParamsSchema json.RawMessage      `json:"params_schema,omitempty"`
}

// CommandSchema is the set of commands a device type declares. When a type
// has a schema, a command must be one of them and its parameters must match:
// no unknown parameter (in the short form), every required one, the right
// types and bounds.
type CommandSchema struct {
	Commands map[string]CommandSpec `json:"commands"`
}

var commandNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)

// maxParamsSchemaBytes bounds one command's params_schema. The API's body
// limit (1 MiB) bounds the whole declaration.
const maxParamsSchemaBytes = 64 << 10

// Validate checks the schema itself: the short forms, and that every
// params_schema compiles as a JSON Schema without references outside
// itself.
func (s CommandSchema) Validate() error {
	_, err := s.compile()
	return err
}

// Check validates a command's name and parameters (a JSON object, or empty
// for none) against the schema. The error is a *ValidationError that says
// what is wrong, fit to show an operator. It compiles the schema on every
// call; Schemas keeps each schema compiled.
func (s CommandSchema) Check(name string, params json.RawMessage) error {
	c, err := s.compile()
	if err != nil {
		return err
	}
	return c.check(name, params)
}

// compiledSchema is a CommandSchema with the parameters of each command
// compiled. Compiled schemas are read-only: safe for concurrent use.
type compiledSchema struct {
	CommandSchema
	params map[string]*jsonschema.Schema
}

func (s CommandSchema) compile() (*compiledSchema, error) {
	if len(s.Commands) == 0 {
		return nil, &devices.ValidationError{Msg: "commands: declare at least one command"}
	}
	if len(s.Commands) > 256 {
		return nil, &devices.ValidationError{Msg: "commands: at most 256"}
	}
	c := &compiledSchema{CommandSchema: s, params: make(map[string]*jsonschema.Schema, len(s.Commands))}
	names := make([]string, 0, len(s.Commands))
	for n := range s.Commands {
		names = append(names, n)
	}
	sort.Strings(names) // report the first problem in a stable order
	for _, name := range names {
		if !commandNamePattern.MatchString(name) {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter", name)}
		}
		doc, err := s.Commands[name].paramsDocument(name)
		if err != nil {
			return nil, err
		}
		sch, err := compileParams(name, doc)
		if err != nil {
			return nil, err
		}
		c.params[name] = sch
	}
	return c, nil
}

// paramsDocument returns the JSON Schema of a command's parameters object,
// decoded as jsonschema wants it: the params_schema as written, or the one
// the short form stands for.
func (c CommandSpec) paramsDocument(name string) (any, error) {
	if len(c.ParamsSchema) > 0 {
		if len(c.Params) > 0 {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: declare params or params_schema, not both", name)}
		}
		if len(c.ParamsSchema) > maxParamsSchemaBytes {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: at most %d bytes", name, maxParamsSchemaBytes)}
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.ParamsSchema))
		if err != nil {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: %v", name, err)}
		}
		if _, ok := doc.(map[string]any); !ok {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: must be a JSON object (a JSON Schema)", name)}
		}
		if loc, n, why, ok := badNumber(doc, nil); ok {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: at %s: %s %s", name, pointer(loc), n, why)}
		}
		return doc, nil
	}
	if len(c.Params) > 64 {
		return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: at most 64 parameters", name)}
	}
	type property struct {
		Type        ParamType `json:"type"`
		Description string    `json:"description,omitempty"`
		Minimum     *float64  `json:"minimum,omitempty"`
		Maximum     *float64  `json:"maximum,omitempty"`
		Enum        []any     `json:"enum,omitempty"`
		MaxLength   int       `json:"maxLength,omitempty"`
	}
	short := struct {
		Type                 string              `json:"type"`
		Properties           map[string]property `json:"properties"`
		Required             []string            `json:"required,omitempty"`
		AdditionalProperties bool                `json:"additionalProperties"`
	}{Type: "object", Properties: make(map[string]property, len(c.Params))}
	for p, spec := range c.Params {
		if p == "" || len(p) > 64 {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: parameter names are 1-64 bytes", name)}
		}
		switch spec.Type {
		case ParamNumber, ParamInteger, ParamString, ParamBoolean, ParamObject, ParamArray:
		default:
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: type %q: use number, integer, string, boolean, object or array", name, p, spec.Type)}
		}
		if spec.Minimum != nil && spec.Maximum != nil && *spec.Minimum > *spec.Maximum {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: minimum above maximum", name, p)}
		}
		if spec.MaxLength < 0 {
			return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q parameter %q: max_length must not be negative", name, p)}
		}
		if spec.Required {
			short.Required = append(short.Required, p)
		}
		short.Properties[p] = property{spec.Type, spec.Description, spec.Minimum, spec.Maximum, spec.Enum, spec.MaxLength}
	}
	b, err := json.Marshal(short)
	if err != nil {
		return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: %v", name, err)}
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// refuseLoader is the compiler's loader: a schema may refer only to itself
// (and to the drafts' meta-schemas, which jsonschema embeds), never to a
// file or a URL, so declaring a schema reads nothing and fetches nothing.
type refuseLoader struct{}

var errOutsideRef = errors.New("references outside the schema are not followed")

func (refuseLoader) Load(string) (any, error) { return nil, errOutsideRef }

// compileParams compiles the JSON Schema of one command's parameters.
func compileParams(name string, doc any) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(refuseLoader{})
	loc := "telehub:///commands/" + name + "/params.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: %v", name, err)}
	}
	sch, err := c.Compile(loc)
	if err == nil {
		return sch, nil
	}
	var msg string
	var le *jsonschema.LoadURLError
	var se *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	switch {
	case errors.As(err, &le):
		msg = fmt.Sprintf("refers to %s: only references inside the schema (such as #/$defs/name) are allowed", le.URL)
	case errors.As(err, &se) && errors.As(se.Err, &ve):
		leaf := firstProblem(ve)
		for len(leaf.Causes) > 0 { // the first reason of a failed anyOf of the meta-schema
			leaf = firstProblem(leaf.Causes[0])
		}
		msg = fmt.Sprintf("not a valid JSON Schema: at %s: %s", pointer(leaf.InstanceLocation), leaf.ErrorKind.LocalizedString(printer))
	default:
		msg = err.Error()
	}
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, loc, ""), strings.TrimSuffix(loc, "params.json"), "")
	return nil, &devices.ValidationError{Msg: fmt.Sprintf("command %q: params_schema: %s", name, msg)}
}

func (c *compiledSchema) check(name string, params json.RawMessage) error {
	sch, ok := c.params[name]
	if !ok {
		names := make([]string, 0, len(c.Commands))
		for n := range c.Commands {
			names = append(names, n)
		}
		sort.Strings(names)
		return &devices.ValidationError{Msg: fmt.Sprintf("unknown command %q; this device type accepts %s", name, strings.Join(names, ", "))}
	}
	values, err := decodeParams(params)
	if err != nil {
		return err
	}
	if loc, n, why, ok := badNumber(values, nil); ok {
		return &devices.ValidationError{Msg: fmt.Sprintf("%s: parameter %q: %s %s", name, paramPath(values, loc), n, why)}
	}
	err = sch.Validate(values)
	var ve *jsonschema.ValidationError
	switch {
	case errors.As(err, &ve):
		return &devices.ValidationError{Msg: name + ": " + describe(firstProblem(ve), values, sch, 0)}
	case err != nil:
		return &devices.ValidationError{Msg: fmt.Sprintf("%s: params: %v", name, err)}
	}
	return nil
}

var printer = message.NewPrinter(language.English)

// leaves returns the errors under e that say what is wrong, looking through
// the ones that only group others ($ref, allOf, the schema itself). oneOf,
// anyOf and not are leaves: their branches explain them.
func leaves(e *jsonschema.ValidationError, out []*jsonschema.ValidationError) []*jsonschema.ValidationError {
	switch e.ErrorKind.(type) {
	case *kind.Schema, *kind.Group, *kind.Reference, *kind.AllOf:
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				out = leaves(c, out)
			}
			return out
		}
	}
	return append(out, e)
}

// firstProblem picks the one problem to report, in a stable order like the
// short form's: unknown parameters first, then by parameter name (a
// missing required one under its own name), the shallowest first.
func firstProblem(e *jsonschema.ValidationError) *jsonschema.ValidationError {
	ls := leaves(e, nil)
	key := func(l *jsonschema.ValidationError) (int, string, int) {
		if len(l.InstanceLocation) == 0 {
			switch k := l.ErrorKind.(type) {
			case *kind.AdditionalProperties:
				return 0, "", 0
			case *kind.Required:
				return 1, slices.Min(k.Missing), 0
			}
			return 1, "", 0
		}
		return 1, l.InstanceLocation[0], len(l.InstanceLocation)
	}
	slices.SortStableFunc(ls, func(a, b *jsonschema.ValidationError) int {
		ga, na, da := key(a)
		gb, nb, db := key(b)
		if ga != gb {
			return ga - gb
		}
		if c := strings.Compare(na, nb); c != 0 {
			return c
		}
		return da - db
	})
	return ls[0]
}

// describe says what is wrong with the parameters in operators' words:
// which parameter, and what about it. base is the depth of the value the
// message is relative to (a branch of oneOf is described relative to the
// value the oneOf applies to).
func describe(e *jsonschema.ValidationError, values any, root *jsonschema.Schema, base int) string {
	loc := e.InstanceLocation
	v := valueAt(values, loc)
	subject := "parameters"
	if len(loc) > base {
		if base == 0 {
			subject = "parameter " + strconv.Quote(paramPath(values, loc))
		} else {
			subject = strconv.Quote(paramPath(valueAt(values, loc[:base]), loc[base:]))
		}
	}
	member := "member"
	if len(loc) == 0 {
		member = "parameter"
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		missing := slices.Sorted(slices.Values(k.Missing))
		msg := fmt.Sprintf("missing required %s %q", member, missing[0])
		if len(loc) == 0 && root != nil {
			if p := root.Properties[missing[0]]; p != nil && p.Types != nil && len(p.Types.ToStrings()) == 1 {
				msg += " (" + p.Types.ToStrings()[0] + ")"
			}
		}
		if len(loc) == base {
			return msg
		}
		return subject + ": " + msg
	case *kind.AdditionalProperties:
		extra := slices.Sorted(slices.Values(k.Properties))
		msg := fmt.Sprintf("unknown %s %q", member, extra[0])
		if len(extra) > 1 {
			msg = fmt.Sprintf("unknown %ss %s", member, quoteAll(extra))
		}
		if len(loc) == base {
			return msg
		}
		return subject + ": " + msg
	}
	return subject + ": " + problemText(e, v, values)
}

// problemText says what is wrong with one value v; values is the whole
// parameters object, in which the branches of oneOf and anyOf are described.
func problemText(e *jsonschema.ValidationError, v, values any) string {
	switch k := e.ErrorKind.(type) {
	case *kind.Type:
		got := jsonKind(v)
		if k.Got == "number" && slices.Contains(k.Want, "integer") {
			got = fmt.Sprint(v)
		}
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = typeName(w)
		}
		return fmt.Sprintf("want %s, got %s", strings.Join(want, " or "), got)
	case *kind.Enum:
		b, _ := json.Marshal(k.Want)
		return fmt.Sprintf("must be one of %s", b)
	case *kind.Const:
		b, _ := json.Marshal(k.Want)
		return fmt.Sprintf("must be %s", b)
	case *kind.Minimum:
		return fmt.Sprintf("%v is below the minimum %s", v, ratText(k.Want))
	case *kind.Maximum:
		return fmt.Sprintf("%v is above the maximum %s", v, ratText(k.Want))
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("%v is not above %s", v, ratText(k.Want))
	case *kind.ExclusiveMaximum:
		return fmt.Sprintf("%v is not below %s", v, ratText(k.Want))
	case *kind.MultipleOf:
		return fmt.Sprintf("%v is not a multiple of %s", v, ratText(k.Want))
	case *kind.MinLength:
		return fmt.Sprintf("shorter than %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("longer than %d characters", k.Want)
	case *kind.Pattern:
		return fmt.Sprintf("%q does not match the pattern %s", truncate(k.Got, 64), k.Want)
	case *kind.Format:
		b, _ := json.Marshal(k.Got)
		return fmt.Sprintf("%s is not a valid %s", truncate(string(b), 66), k.Want)
	case *kind.MinItems:
		return fmt.Sprintf("fewer than %d items", k.Want)
	case *kind.MaxItems:
		return fmt.Sprintf("more than %d items", k.Want)
	case *kind.UniqueItems:
		return fmt.Sprintf("items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	case *kind.MinProperties:
		return fmt.Sprintf("fewer than %d members", k.Want)
	case *kind.MaxProperties:
		return fmt.Sprintf("more than %d members", k.Want)
	case *kind.FalseSchema:
		return "not allowed"
	case *kind.OneOf:
		if len(k.Subschemas) > 1 {
			return fmt.Sprintf("matches more than one of the allowed forms (oneOf %d and %d)", k.Subschemas[0]+1, k.Subschemas[1]+1)
		}
		return "matches none of the allowed forms (oneOf): " + branches(e, values)
	case *kind.AnyOf:
		return "matches none of the allowed forms (anyOf): " + branches(e, values)
	case *kind.Not:
		return "matches a form that is not allowed (not)"
	}
	return e.ErrorKind.LocalizedString(printer)
}

// branches says why each branch of a failed oneOf or anyOf did not match.
func branches(e *jsonschema.ValidationError, values any) string {
	base := len(e.InstanceLocation)
	parts := make([]string, 0, len(e.Causes))
	for i, c := range e.Causes {
		if i == 8 {
			parts = append(parts, "...")
			break
		}
		l := firstProblem(c)
		var text string
		if len(l.InstanceLocation) == base {
			switch l.ErrorKind.(type) {
			case *kind.Required, *kind.AdditionalProperties:
				text = describe(l, values, nil, base)
			default:
				text = problemText(l, valueAt(values, l.InstanceLocation), values)
			}
		} else {
			text = describe(l, values, nil, base)
		}
		parts = append(parts, fmt.Sprintf("%d) %s", i+1, text))
	}
	return strings.Join(parts, "; ")
}

func typeName(t string) string {
	switch t {
	case "null":
		return "null"
	case "integer", "object", "array":
		return "an " + t
	}
	return "a " + t
}

func ratText(r *big.Rat) string {
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// valueAt returns the value at an instance location.
func valueAt(v any, loc []string) any {
	for _, seg := range loc {
		switch x := v.(type) {
		case map[string]any:
			v = x[seg]
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// paramPath writes an instance location as operators read it: value,
// opts.mode, days[1].
func paramPath(v any, loc []string) string {
	var b strings.Builder
	for i, seg := range loc {
		if _, ok := v.([]any); ok {
			b.WriteString("[" + seg + "]")
		} else {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(seg)
		}
		v = valueAt(v, []string{seg})
	}
	return b.String()
}

// pointer writes a location as a JSON pointer.
func pointer(loc []string) string {
	if len(loc) == 0 {
		return "the root"
	}
	var b strings.Builder
	for _, seg := range loc {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(seg))
	}
	return b.String()
}

// badNumber finds a number no device can read: too large for a float64
// (1e999), or with an exponent so far out (1e-999999) that an exact
// comparison would cost milliseconds each. jsonschema compares numbers
// exactly (math/big) and panics on those math/big refuses, so parameters
// and schemas are checked for them first.
func badNumber(v any, loc []string) (at []string, n json.Number, why string, found bool) {
	switch x := v.(type) {
	case json.Number:
		if f, err := x.Float64(); err != nil || math.IsInf(f, 0) {
			return loc, x, "is not a finite number", true
		}
		if i := strings.IndexAny(string(x), "eE"); i >= 0 {
			if e, err := strconv.Atoi(string(x[i+1:])); err != nil || e < -400 || e > 400 {
				return loc, x, "is out of range", true
			}
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if at, n, why, ok := badNumber(x[k], append(slices.Clip(loc), k)); ok {
				return at, n, why, true
			}
		}
	case []any:
		for i, e := range x {
			if at, n, why, ok := badNumber(e, append(slices.Clip(loc), strconv.Itoa(i))); ok {
				return at, n, why, true
			}
		}
	}
	return nil, "", "", false
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

// Schemas holds the command schemas of device types, persisted in the
// "command_schemas" bucket of the hub's state database as CommandSchema
// JSON and cached in memory, compiled. Safe for concurrent use.
type Schemas struct {
	by kv.Table[compiledSchema]
}

// UnmarshalJSON decodes a stored CommandSchema and compiles it, so that the
// table of schemas compiles each one once, when it loads. A compiledSchema
// encodes as its CommandSchema.
func (c *compiledSchema) UnmarshalJSON(b []byte) error {
	var cs CommandSchema
	if err := json.Unmarshal(b, &cs); err != nil {
		return err
	}
	cc, err := cs.compile()
	if err != nil {
		return err
	}
	*c = *cc
	return nil
}

// NewSchemas loads the schemas from their bucket in db.
func NewSchemas(db *bolt.DB) (*Schemas, error) {
	by, err := kv.OpenBolt[compiledSchema](db, "command_schemas")
	if err != nil {
		return nil, fmt.Errorf("load command schemas: %w", err)
	}
	return &Schemas{by: by}, nil
}

// Get returns the command schema of a device type.
func (s *Schemas) Get(deviceType string) (CommandSchema, bool) {
	c, ok := s.by.Get(deviceType)
	return c.CommandSchema, ok
}

// List returns every declared schema by device type.
func (s *Schemas) List() map[string]CommandSchema {
	all := s.by.All()
	out := make(map[string]CommandSchema, len(all))
	for _, e := range all {
		out[e.Key] = e.Value.CommandSchema
	}
	return out
}

// Put declares (or replaces) the command schema of a device type.
func (s *Schemas) Put(deviceType string, cs CommandSchema) error {
	if !devices.ValidType(deviceType) {
		return &devices.ValidationError{Msg: fmt.Sprintf("type %q: use 1-64 lower-case letters, digits, '_' or '-', starting with a letter", deviceType)}
	}
	c, err := cs.compile()
	if err != nil {
		return err
	}
	if err := s.by.Put(deviceType, *c); err != nil {
		return fmt.Errorf("store command schema: %w", err)
	}
	return nil
}

// Delete removes the schema of a device type; its commands are then no
// longer validated by the hub.
func (s *Schemas) Delete(deviceType string) error {
	ok, err := s.by.Delete(deviceType)
	if err != nil {
		return fmt.Errorf("delete command schema: %w", err)
	}
	if !ok {
		return devices.ErrNotFound
	}
	return nil
}

// Check validates a command for a device type: against the type's schema
// when one is declared, else only the name's form and that params is an
// object.
func (s *Schemas) Check(deviceType, name string, params json.RawMessage) error {
	if !commandNamePattern.MatchString(name) {
		return &devices.ValidationError{Msg: fmt.Sprintf("name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter", name)}
	}
	c, ok := s.by.Get(deviceType)
	if !ok {
		_, err := decodeParams(params)
		return err
	}
	return c.check(name, params)
}
