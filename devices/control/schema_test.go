package control

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

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
