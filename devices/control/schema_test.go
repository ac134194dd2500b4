package control

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
)

func f64(v float64) *float64 { return &v }

func TestCommandSchemaCheck(t *testing.T) {
	cs := CommandSchema{Commands: map[string]CommandSpec{
		"set": {Params: map[string]ParamSpec{
			"value": {Type: ParamNumber, Required: true, Minimum: f64(5), Maximum: f64(30)},
			"steps": {Type: ParamInteger},
			"mode":  {Type: ParamString, Enum: []any{"heat", "off"}},
			"label": {Type: ParamString, MaxLength: 3},
			"on":    {Type: ParamBoolean},
			"opts":  {Type: ParamObject},
			"days":  {Type: ParamArray},
			"level": {Type: ParamNumber, Enum: []any{1.0, 2.0}},
		}},
		"reset": {},
	}}
	require.NoError(t, cs.Validate())
	for _, tc := range []struct {
		name, cmd, params, err string
	}{
		{"valid", "set", `{"value":21.5,"steps":2,"mode":"off","label":"abc","on":true,"opts":{},"days":[1],"level":2}`, ""},
		{"no params command", "reset", ``, ""},
		{"no params as null", "reset", `null`, ""},
		{"unknown command", "boot", `{}`, `unknown command "boot"; this device type accepts reset, set`},
		{"missing required", "set", `{}`, `set: missing required parameter "value" (number)`},
		{"unknown parameter", "reset", `{"x":1}`, `reset: unknown parameter "x"`},
		{"below minimum", "set", `{"value":4}`, `set: parameter "value": 4 is below the minimum 5`},
		{"above maximum", "set", `{"value":30.01}`, `set: parameter "value": 30.01 is above the maximum 30`},
		{"integer with fraction", "set", `{"value":6,"steps":1.5}`, `set: parameter "steps": want an integer, got 1.5`},
		{"string for number", "set", `{"value":"6"}`, `set: parameter "value": want a number, got a string`},
		{"not in enum", "set", `{"value":6,"mode":"cool"}`, `set: parameter "mode": must be one of ["heat","off"]`},
		{"numeric enum", "set", `{"value":6,"level":3}`, `set: parameter "level": must be one of [1,2]`},
		{"too long", "set", `{"value":6,"label":"abcd"}`, `set: parameter "label": longer than 3 characters`},
		{"boolean", "set", `{"value":6,"on":1}`, `set: parameter "on": want a boolean, got a number`},
		{"object", "set", `{"value":6,"opts":[]}`, `set: parameter "opts": want an object, got an array`},
		{"array", "set", `{"value":6,"days":{}}`, `set: parameter "days": want an array, got an object`},
		{"null value", "set", `{"value":null}`, `set: parameter "value": want a number, got null`},
		{"params array", "set", `[]`, `params: must be a JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cs.Check(tc.cmd, json.RawMessage(tc.params))
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			var ve *devices.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.err, ve.Error())
		})
	}
}

func TestCommandSchemaValidateAndStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		cs   CommandSchema
	}{
		{"empty", CommandSchema{}},
		{"bad name", CommandSchema{Commands: map[string]CommandSpec{"a b": {}}}},
		{"bad type", CommandSchema{Commands: map[string]CommandSpec{"a": {Params: map[string]ParamSpec{"p": {Type: "float"}}}}}},
		{"min above max", CommandSchema{Commands: map[string]CommandSpec{"a": {Params: map[string]ParamSpec{"p": {Type: ParamNumber, Minimum: f64(2), Maximum: f64(1)}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ve *devices.ValidationError
			require.ErrorAs(t, tc.cs.Validate(), &ve)
		})
	}

	dir := t.TempDir()
	db := openStateDB(t, dir)
	s, err := NewSchemas(db)
	require.NoError(t, err)
	cs := CommandSchema{Commands: map[string]CommandSpec{"ping": {}}}
	require.Error(t, s.Put("Bad Type", cs))
	require.NoError(t, s.Put("gadget", cs))
	require.NoError(t, s.Check("gadget", "ping", nil))
	require.Error(t, s.Check("gadget", "pong", nil))
	require.NoError(t, s.Check("other", "anything", json.RawMessage(`{"x":1}`)), "no schema: any command")
	require.Error(t, s.Check("other", "a/b", nil), "but the name must still be topic-safe")
	require.NoError(t, db.Close())

	db = openStateDB(t, dir)
	defer db.Close()
	s, err = NewSchemas(db)
	require.NoError(t, err)
	_, ok := s.Get("gadget")
	require.True(t, ok, "schemas survive a restart")
	require.NoError(t, s.Delete("gadget"))
	require.ErrorIs(t, s.Delete("gadget"), devices.ErrNotFound)
	require.NoError(t, s.Check("gadget", "pong", nil))
}

// A command's params_schema is a JSON Schema (draft 2020-12): patterns,
// formats, nested objects, oneOf and $defs are checked, and the errors name
// the parameter in the words of the short form.
func TestCommandParamsSchema(t *testing.T) {
	var cs CommandSchema
	require.NoError(t, json.Unmarshal([]byte(`{"commands":{
		"schedule":{"params_schema":{
			"type":"object",
			"required":["zone","slots"],
			"additionalProperties":false,
			"properties":{
				"zone":{"type":"string","pattern":"^[a-z]+-[0-9]+$"},
				"slots":{"type":"array","minItems":1,"maxItems":3,"items":{"$ref":"#/$defs/slot"}},
				"until":{"type":"string","format":"date-time"},
				"target":{"oneOf":[{"type":"number","minimum":5,"maximum":30},{"const":"eco"}]},
				"steps":{"type":"integer","exclusiveMinimum":0}
			},
			"$defs":{"slot":{
				"type":"object","required":["at"],"additionalProperties":false,
				"properties":{"at":{"type":"string","pattern":"^[0-2][0-9]:[0-5][0-9]$"},"level":{"enum":["low","high"]}}
			}}
		}},
		"reset":{}
	}}`), &cs))
	require.NoError(t, cs.Validate())
	for _, tc := range []struct {
		name, cmd, params, err string
	}{
		{"valid", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30","level":"high"}],"until":"2026-12-24T18:00:00Z","target":"eco","steps":2}`, ""},
		{"valid number branch", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"target":21.5}`, ""},
		{"missing required", "schedule", `{"slots":[{"at":"07:30"}]}`, `schedule: missing required parameter "zone" (string)`},
		{"unknown parameter", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"fan":1}`, `schedule: unknown parameter "fan"`},
		{"pattern", "schedule", `{"zone":"Hall 1","slots":[{"at":"07:30"}]}`, `schedule: parameter "zone": "Hall 1" does not match the pattern ^[a-z]+-[0-9]+$`},
		{"nested pattern through $ref", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"},{"at":"7.30"}]}`, `schedule: parameter "slots[1].at": "7.30" does not match the pattern ^[0-2][0-9]:[0-5][0-9]$`},
		{"nested missing member", "schedule", `{"zone":"hall-1","slots":[{"level":"low"}]}`, `schedule: parameter "slots[0]": missing required member "at"`},
		{"nested unknown member", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30","colour":"red"}]}`, `schedule: parameter "slots[0]": unknown member "colour"`},
		{"nested enum", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30","level":"max"}]}`, `schedule: parameter "slots[0].level": must be one of ["low","high"]`},
		{"too few items", "schedule", `{"zone":"hall-1","slots":[]}`, `schedule: parameter "slots": fewer than 1 items`},
		{"format", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"until":"tomorrow"}`, `schedule: parameter "until": "tomorrow" is not a valid date-time`},
		{"oneOf none", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"target":40}`, `schedule: parameter "target": matches none of the allowed forms (oneOf): 1) 40 is above the maximum 30; 2) must be "eco"`},
		{"integer", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"steps":1.5}`, `schedule: parameter "steps": want an integer, got 1.5`},
		{"exclusive minimum", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"steps":0}`, `schedule: parameter "steps": 0 is not above 0`},
		{"type", "schedule", `{"zone":7,"slots":[{"at":"07:30"}]}`, `schedule: parameter "zone": want a string, got a number`},
		{"object for number", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"target":{"x":1}}`, `schedule: parameter "target": matches none of the allowed forms (oneOf): 1) want a number, got an object; 2) must be "eco"`},
		{"too large for a float64", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"steps":1e999}`, `schedule: parameter "steps": 1e999 is not a finite number`},
		{"exponent too large for math/big", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"target":1e1000001}`, `schedule: parameter "target": 1e1000001 is not a finite number`},
		{"exponent far out", "schedule", `{"zone":"hall-1","slots":[{"at":"07:30"}],"target":{"a":[1e-999999]}}`, `schedule: parameter "target.a[0]": 1e-999999 is out of range`},
		{"params array", "schedule", `[]`, `params: must be a JSON object`},
		{"no params declared", "reset", `{"x":1}`, `reset: unknown parameter "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cs.Check(tc.cmd, json.RawMessage(tc.params))
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			var ve *devices.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.err, ve.Error())
		})
	}
}

// A params_schema may refer only to itself: a reference to a URL or a file
// is refused when the schema is declared, and nothing is fetched. Bad
// schemas are refused with the reason.
func TestCommandParamsSchemaRefused(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"type":"string"}`))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name, spec, err string
	}{
		{"remote $ref", `{"params_schema":{"properties":{"a":{"$ref":"` + srv.URL + `/a.json"}}}}`,
			`command "c": params_schema: refers to ` + srv.URL + `/a.json: only references inside the schema (such as #/$defs/name) are allowed`},
		{"relative $ref", `{"params_schema":{"properties":{"a":{"$ref":"other.json"}}}}`, `command "c": params_schema: refers to other.json: only references inside the schema`},
		{"file $ref", `{"params_schema":{"$ref":"file:///etc/passwd"}}`, `refers to file:///etc/passwd`},
		{"remote $schema", `{"params_schema":{"$schema":"` + srv.URL + `/meta.json"}}`, `refers to ` + srv.URL + `/meta.json`},
		{"missing $defs", `{"params_schema":{"$ref":"#/$defs/nope"}}`, `command "c": params_schema: json-pointer in "#/$defs/nope" not found`},
		{"not a schema", `{"params_schema":{"type":"float"}}`, `command "c": params_schema: not a valid JSON Schema: at /type: value must be one of 'array', 'boolean', 'integer', 'null', 'number', 'object', 'string'`},
		{"bad regex", `{"params_schema":{"pattern":"(?<=a)b"}}`, `command "c": params_schema: not a valid JSON Schema: at /pattern: '(?<=a)b' is not valid regex`},
		{"not an object", `{"params_schema":true}`, `command "c": params_schema: must be a JSON object (a JSON Schema)`},
		{"number out of range", `{"params_schema":{"properties":{"a":{"maxLength":1e1000001}}}}`, `command "c": params_schema: at /properties/a/maxLength: 1e1000001 is not a finite number`},
		{"both forms", `{"params":{"a":{"type":"string"}},"params_schema":{"type":"object"}}`, `command "c": declare params or params_schema, not both`},
		{"too large", `{"params_schema":{"description":"` + strings.Repeat("x", maxParamsSchemaBytes) + `"}}`, `command "c": params_schema: at most 65536 bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cs CommandSchema
			require.NoError(t, json.Unmarshal([]byte(`{"commands":{"c":`+tc.spec+`}}`), &cs))
			err := cs.Validate()
			var ve *devices.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Contains(t, ve.Error(), tc.err)
		})
	}
	require.Zero(t, hits.Load(), "declaring a schema fetches nothing")
}

// Declared in either form, a schema survives a restart compiled, and the
// store checks commands with it.
func TestSchemasStoreParamsSchema(t *testing.T) {
	dir := t.TempDir()
	db := openStateDB(t, dir)
	s, err := NewSchemas(db)
	require.NoError(t, err)
	var cs CommandSchema
	require.NoError(t, json.Unmarshal([]byte(`{"commands":{"name":{"params_schema":{"type":"object","properties":{"v":{"type":"string","maxLength":4}}}}}}`), &cs))
	require.NoError(t, s.Put("gadget", cs))
	require.NoError(t, db.Close())

	db = openStateDB(t, dir)
	defer db.Close()
	s, err = NewSchemas(db)
	require.NoError(t, err)
	require.NoError(t, s.Check("gadget", "name", json.RawMessage(`{"v":"abcd","other":1}`)), "a params_schema allows other members unless it says not")
	var ve *devices.ValidationError
	require.ErrorAs(t, s.Check("gadget", "name", json.RawMessage(`{"v":"abcde"}`)), &ve)
	require.Equal(t, `name: parameter "v": longer than 4 characters`, ve.Error())
	got, ok := s.Get("gadget")
	require.True(t, ok)
	require.JSONEq(t, string(cs.Commands["name"].ParamsSchema), string(got.Commands["name"].ParamsSchema))
}

// FuzzCommandParamsSchema: any schema and any parameters give an answer
// (compiled or refused, valid or a ValidationError), never a panic or a
// fetch.
func FuzzCommandParamsSchema(f *testing.F) {
	f.Add(`{"type":"object","properties":{"a":{"type":"string","pattern":"^x"}}}`, `{"a":"y"}`)
	f.Add(`{"oneOf":[{"required":["a"]},{"required":["b"]}]}`, `{"a":1,"b":2}`)
	f.Add(`{"$defs":{"n":{"items":{"$ref":"#/$defs/n"}}},"properties":{"t":{"$ref":"#/$defs/n"}}}`, `{"t":[[[[1]]]]}`)
	f.Add(`{"$ref":"#"}`, `{}`)
	f.Add(`{"anyOf":[{"not":{}},{"format":"email"}],"uniqueItems":true}`, `{"a":[1,1]}`)
	f.Add(`{"properties":{"n":{"multipleOf":0.01,"maximum":1e308}}}`, `{"n":1e999}`)
	f.Fuzz(func(t *testing.T, schema, params string) {
		if !json.Valid([]byte(schema)) {
			return
		}
		cs := CommandSchema{Commands: map[string]CommandSpec{"c": {ParamsSchema: json.RawMessage(schema)}}}
		c, err := cs.compile()
		var ve *devices.ValidationError
		if err != nil {
			require.ErrorAs(t, err, &ve)
			return
		}
		if err := c.check("c", json.RawMessage(params)); err != nil {
			require.ErrorAs(t, err, &ve)
			require.NotEmpty(t, ve.Error())
		}
	})
}

// TestSchemasBucketFormat: a schema is stored as its CommandSchema JSON
// under its device type, the format state.db files already hold, however
// the store caches it.
func TestSchemasBucketFormat(t *testing.T) {
	db := openStateDB(t, t.TempDir())
	defer db.Close()
	s, err := NewSchemas(db)
	require.NoError(t, err)
	cs := CommandSchema{Commands: map[string]CommandSpec{
		"set": {Description: "set a level", Params: map[string]ParamSpec{"level": {Type: "number", Required: true, Minimum: f64(0)}}},
		"raw": {ParamsSchema: json.RawMessage(`{"type":"object"}`)},
	}}
	require.NoError(t, s.Put("lamp", cs))
	want, err := json.Marshal(cs)
	require.NoError(t, err)
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		require.JSONEq(t, string(want), string(tx.Bucket([]byte("command_schemas")).Get([]byte("lamp"))))
		return nil
	}))
}
