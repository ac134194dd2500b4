package openapitest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTransportChecksAgainstTheDescription runs requests against a server
// that answers as told, through the checking transport: what
// docs/openapi.yaml describes passes, each kind of disagreement fails.
func TestTransportChecksAgainstTheDescription(t *testing.T) {
	doc, err := Repo()
	require.NoError(t, err)
	var status int
	var ctype, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &Transport{Doc: doc}}
	for _, tc := range []struct {
		name, method, path, reqBody string
		status                      int
		ctype, body                 string
		wantErr                     string
	}{
		{name: "described", method: "GET", path: "/api/v1/devices/t1/state", status: 200, ctype: "application/json",
			body: `{"device_id":"t1","desired":{},"desired_version":0,"reported":{},"reported_version":0,"delta":{},"in_sync":true}`},
		{name: "problem", method: "GET", path: "/api/v1/devices/t1/state", status: 404, ctype: "application/problem+json",
			body: `{"type":"about:blank","title":"not found","status":404,"detail":"no such device"}`},
		{name: "not a route, 404", method: "GET", path: "/api/v1/nothing", status: 404, ctype: "application/problem+json", body: `{}`},
		{name: "outside the API", method: "GET", path: "/query", status: 200, ctype: "text/plain", body: `anything`},
		{name: "route not described", method: "GET", path: "/api/v1/nothing", status: 200, ctype: "application/json", body: `{}`,
			wantErr: "is not in docs/openapi.yaml"},
		{name: "status not described", method: "GET", path: "/api/v1/devices/t1/state", status: 418, ctype: "application/json", body: `{}`,
			wantErr: "status is not supported"},
		{name: "body not as described", method: "GET", path: "/api/v1/devices/t1/state", status: 200, ctype: "application/json",
			body: `{"device_id":7}`, wantErr: "device_id"},
		{name: "bad request refused", method: "POST", path: "/api/v1/devices", reqBody: `{"id":"x"}`, status: 400,
			ctype: "application/problem+json", body: `{"title":"bad request","status":400}`},
		{name: "answer of a creation", method: "POST", path: "/api/v1/devices", reqBody: `{"id":"x","type":"t"}`, status: 201,
			ctype: "application/json", body: `{"device":{"id":"x","type":"t"},"token":"t"}`},
		{name: "status of another operation", method: "DELETE", path: "/api/v1/devices/x", status: 200,
			ctype: "application/json", body: `{}`, wantErr: "status is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ctype, body = tc.status, tc.ctype, tc.body
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.reqBody))
			require.NoError(t, err)
			resp, err := client.Do(req)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, tc.body, string(got), "the body is still there for the test")
		})
	}
}
