package rules

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseRule: whatever the bytes, ParseRule returns a valid spec or a
// *ValidationError, never panics; a spec it accepts survives a JSON round
// trip unchanged and compiles.
func FuzzParseRule(f *testing.F) {
	f.Add([]byte(`{"name":"too hot","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"5m","clear_below":26},"severity":"critical"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseRule(b)
		if err != nil {
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			return
		}
		out, err := json.Marshal(s)
		require.NoError(t, err)
		again, err := ParseRule(out)
		require.NoError(t, err, "%s", out)
		require.Equal(t, s, again)
		_, err = compileRule(Rule{Spec: s})
		require.NoError(t, err)
	})
}

// FuzzParseSelector: a selector that parses prints in a canonical form that
// parses to the same selector.
func FuzzParseSelector(f *testing.F) {
	f.Add("room=kitchen,floor in (1,2),!spare")
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		require.NoError(t, err, "canonical form %q of %q", sel.String(), s)
		require.Equal(t, sel, again)
		sel.Matches(map[string]string{"room": "kitchen", "floor": "1"})
	})
}
