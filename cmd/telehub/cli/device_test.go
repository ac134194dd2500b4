package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSwitches parses the CLI's switches as the README writes them: a bare
// switch, =true, =false, and a switch followed by another flag or by a
// positional argument.
func TestSwitches(t *testing.T) {
	queries := make(chan url.Values, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries <- r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"devices": []device{{ID: "kitchen", Type: "thermostat"}}})
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name    string
		args    []string
		online  string // the online query parameter sent; empty: none
		typ     string
		json    bool
		wantErr string
	}{
		{name: "no switch", args: nil},
		{name: "bare switch", args: []string{"--online"}, online: "true"},
		{name: "=true", args: []string{"--online=true"}, online: "true"},
		{name: "=false", args: []string{"--online=false"}, online: "false"},
		{name: "followed by another flag", args: []string{"--online", "--type", "thermostat"}, online: "true", typ: "thermostat"},
		{name: "two switches", args: []string{"--json", "--online"}, online: "true", json: true},
		{name: "json=false", args: []string{"--json=false", "--type", "wearable"}, typ: "wearable"},
		{name: "not a bool", args: []string{"--online=maybe"}, wantErr: `"maybe" is not true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"list", "--url", srv.URL, "--token", "t"}, tc.args...)
			err := Device(context.Background(), args, Env{Stdout: &out, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			q := <-queries
			require.Equal(t, tc.online, q.Get("online"), "online filter")
			require.Equal(t, tc.typ, q.Get("type"), "type filter")
			if tc.json {
				require.True(t, json.Valid(out.Bytes()), "--json prints JSON: %s", out.String())
			} else {
				require.Contains(t, out.String(), "ID  ", "a table")
			}
		})
	}
}
