package rules

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRuleAcceptsEveryKind(t *testing.T) {
	for _, tc := range []struct{ name, json string }{
		{"threshold with for and hysteresis", `{"name":"too hot","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"5m","clear_below":26},"severity":"critical"}`},
		{"threshold below with clear_above", `{"name":"too cold","scope":{"device":"t1"},"condition":{"kind":"threshold","field":"temperature","op":"<=","value":5,"clear_above":7}}`},
		{"string equality", `{"name":"door","scope":{"labels":"room=hall"},"condition":{"kind":"threshold","field":"door","op":"==","value":"open","for":"30s"}}`},
		{"bool inequality", `{"name":"heating off","scope":{},"condition":{"kind":"threshold","field":"heating","op":"!=","value":true}}`},
		{"rate", `{"name":"rising","scope":{"type":"thermostat","labels":"floor in (1,2)"},"condition":{"kind":"rate","field":"temperature","op":">","value":2,"window":"5m"}}`},
		{"absence of a field", `{"name":"quiet","scope":{"type":"wearable"},"condition":{"kind":"absence","field":"heart_rate","for":"2m"},"notify":["wh-1"]}`},
		{"absence of any data", `{"id":"no-data","name":"no data","scope":{},"condition":{"kind":"absence","for":"2m"},"severity":"info"}`},
		{"offline", `{"name":"offline","scope":{"labels":"!spare"},"condition":{"kind":"offline","for":"1m"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseRule([]byte(tc.json))
			require.NoError(t, err)
			// What the API returns parses back to the same rule.
			b, err := json.Marshal(s)
			require.NoError(t, err)
			again, err := ParseRule(b)
			require.NoError(t, err)
			require.Equal(t, s, again)
		})
	}
}

func TestParseRuleSaysWhatAndWhere(t *testing.T) {
	base := func(cond string) string {
		return `{"name":"r","scope":{"type":"thermostat"},"condition":` + cond + `}`
	}
	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", `{"name":`, "invalid JSON"},
		{"unknown field", `{"name":"r","scope":{},"condition":{"kind":"offline","for":"1m"},"colour":"red"}`, `unknown field "colour"`},
		{"trailing data", base(`{"kind":"offline","for":"1m"}`) + `{}`, "unexpected data after the rule"},
		{"no name", `{"scope":{},"condition":{"kind":"offline","for":"1m"}}`, "name: required"},
		{"bad id", `{"id":"a b","name":"r","scope":{},"condition":{"kind":"offline","for":"1m"}}`, `id: "a b"`},
		{"bad severity", `{"name":"r","severity":"apocalyptic","scope":{},"condition":{"kind":"offline","for":"1m"}}`, "severity: \"apocalyptic\""},
		{"no kind", base(`{}`), "condition.kind: required"},
		{"unknown kind", base(`{"kind":"vibes"}`), `condition.kind: "vibes"`},
		{"no field", base(`{"kind":"threshold","op":">","value":1}`), "condition.field: required"},
		{"bad op", base(`{"kind":"threshold","field":"t","op":"=>","value":1}`), `condition.op: "=>"`},
		{"no value", base(`{"kind":"threshold","field":"t","op":">"}`), "condition.value: required"},
		{"string with >", base(`{"kind":"threshold","field":"t","op":">","value":"hot"}`), "condition.value: > compares numbers"},
		{"object value", base(`{"kind":"threshold","field":"t","op":"==","value":{"a":1}}`), "condition.value: must be a number"},
		{"bad for", base(`{"kind":"threshold","field":"t","op":">","value":1,"for":"5 minutes"}`), `condition.for: "5 minutes" is not a duration`},
		{"negative for", base(`{"kind":"threshold","field":"t","op":">","value":1,"for":"-1s"}`), "condition.for: must not be negative"},
		{"clear_below with <", base(`{"kind":"threshold","field":"t","op":"<","value":1,"clear_below":0}`), "condition.clear_below: goes with > or >="},
		{"clear_below above value", base(`{"kind":"threshold","field":"t","op":">","value":28,"clear_below":30}`), "condition.clear_below: must be a number not above value 28"},
		{"clear_above below value", base(`{"kind":"threshold","field":"t","op":"<","value":5,"clear_above":4}`), "condition.clear_above: must be a number not below value 5"},
		{"both clears", base(`{"kind":"threshold","field":"t","op":">","value":1,"clear_below":0,"clear_above":2}`), "not both"},
		{"window on threshold", base(`{"kind":"threshold","field":"t","op":">","value":1,"window":"1m"}`), "condition.window: applies to rate rules only"},
		{"rate without window", base(`{"kind":"rate","field":"t","op":">","value":1}`), "condition.window: required"},
		{"rate with ==", base(`{"kind":"rate","field":"t","op":"==","value":1,"window":"1m"}`), "condition.op: a rate rule"},
		{"rate with hysteresis", base(`{"kind":"rate","field":"t","op":">","value":1,"window":"1m","clear_below":0}`), "threshold rules only"},
		{"absence without for", base(`{"kind":"absence"}`), "condition.for: required"},
		{"absence with op", base(`{"kind":"absence","for":"1m","op":">"}`), "takes only field and for"},
		{"offline with field", base(`{"kind":"offline","field":"t","for":"1m"}`), "condition.field: an offline rule"},
		{"offline zero for", base(`{"kind":"offline","for":"0s"}`), "condition.for: must be longer than 0"},
		{"huge for", base(`{"kind":"offline","for":"10000h"}`), "condition.for: at most"},
		{"device and type", `{"name":"r","scope":{"device":"t1","type":"thermostat"},"condition":{"kind":"offline","for":"1m"}}`, "scope: device names one device"},
		{"bad type", `{"name":"r","scope":{"type":"Thermo Stat"},"condition":{"kind":"offline","for":"1m"}}`, `scope.type: "Thermo Stat"`},
		{"bad selector", `{"name":"r","scope":{"labels":"room=a=b"},"condition":{"kind":"offline","for":"1m"}}`, "scope.labels:"},
		{"bad selector list", `{"name":"r","scope":{"labels":"room in (a,"},"condition":{"kind":"offline","for":"1m"}}`, "scope.labels: "},
		{"bad webhook", `{"name":"r","scope":{},"condition":{"kind":"offline","for":"1m"},"notify":["a b"]}`, "notify[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRule([]byte(tc.json))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
		})
	}
}

func TestValidateDeclaredNamesTheRule(t *testing.T) {
	ok := Spec{ID: "hot", Name: "hot", Condition: Condition{Kind: KindOffline, For: "1m"}}
	noID := ok
	noID.ID = ""
	bad := ok
	bad.ID, bad.Condition.For = "bad", "soon"
	err := ValidateDeclared([]Spec{ok, noID, ok, bad})
	require.ErrorContains(t, err, "rules[1]: id: required")
	require.ErrorContains(t, err, `rules[2] (id "hot"): id: already used by rules[0]`)
	require.ErrorContains(t, err, `rules[3] (id "bad"): condition.for: "soon" is not a duration`)
	require.NoError(t, ValidateDeclared([]Spec{ok}))
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"room": "kitchen", "floor": "2", "spare": ""}
	for _, tc := range []struct {
		sel   string
		match bool
		canon string
	}{
		{"room=kitchen", true, "room=kitchen"},
		{"room==kitchen", true, "room=kitchen"},
		{" room = kitchen , floor!=1 ", true, "room=kitchen,floor!=1"},
		{"room!=kitchen", false, "room!=kitchen"},
		{"missing!=x", true, "missing!=x"},
		{"floor in (1, 2)", true, "floor in (1,2)"},
		{"floor in (3,1)", false, "floor in (1,3)"},
		{"floor notin (1,3)", true, "floor notin (1,3)"},
		{"missing notin (1)", true, "missing notin (1)"},
		{"spare", true, "spare"},
		{"!spare", false, "!spare"},
		{"!missing,room", true, "!missing,room"},
		{"spare=", true, "spare="},
		{"a/b.c-d=x", false, "a/b.c-d=x"},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			s, err := ParseSelector(tc.sel)
			require.NoError(t, err)
			require.Equal(t, tc.match, s.Matches(labels))
			require.Equal(t, tc.canon, s.String())
		})
	}
	for _, bad := range []string{"", " ", "room=a b", "=x", "room in", "room in ()", "room in (a", "room in (a b)", "room ~ a", "!", "room,", ",room", "-room=x", "room=(x)"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := ParseSelector(bad)
			require.Error(t, err)
		})
	}
}
