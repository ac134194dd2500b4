package influx

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// TestInfluxWriteErrorKinds: only answers that refuse the content of a write
// make readings dead letters; a missing database, a bad token or a server
// error are retried, since giving the readings up would lose them.
func TestInfluxWriteErrorKinds(t *testing.T) {
	type kind int
	const (
		ok kind = iota
		permanent
		retryAfter
		transient
	)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		body       string
		want       kind
		wantAfter  time.Duration
	}{
		{"written", http.StatusNoContent, "", "", ok, 0},
		{"field type conflict", http.StatusBadRequest, "", `{"error":"partial write: field type conflict: input field \"t\" on measurement \"m\" is type string, already exists as type float dropped=1"}`, permanent, 0},
		{"too large", http.StatusRequestEntityTooLarge, "", `{"error":"request too large"}`, permanent, 0},
		{"unprocessable", http.StatusUnprocessableEntity, "", `{"code":"unprocessable entity","message":"points outside retention"}`, permanent, 0},
		{"database not found", http.StatusNotFound, "", `{"error":"database not found: \"db\""}`, transient, 0},
		{"bad token", http.StatusUnauthorized, "", `{"error":"authorization failed"}`, transient, 0},
		{"forbidden", http.StatusForbidden, "", `{"code":"forbidden","message":"insufficient permissions"}`, transient, 0},
		{"request timeout", http.StatusRequestTimeout, "", "", transient, 0},
		{"server error", http.StatusInternalServerError, "", `{"error":"timeout"}`, transient, 0},
		{"rate limited", http.StatusTooManyRequests, "3", "", retryAfter, 3 * time.Second},
		{"unavailable", http.StatusServiceUnavailable, "", "", retryAfter, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.body != "" {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			sink := New(Config{URL: srv.URL, Bucket: "db", Measurement: "telemetry", Timeout: 5 * time.Second})
			defer sink.Close()
			err := sink.Write(context.Background(), []ingest.Reading{{DeviceID: "d1", Time: time.Unix(1, 0), Fields: []ingest.Field{{Name: "t", Value: ingest.Number(1)}}}})
			var perm *ingest.PermanentError
			var ra *ingest.RetryAfterError
			switch tc.want {
			case ok:
				require.NoError(t, err)
			case permanent:
				require.ErrorAs(t, err, &perm)
			case retryAfter:
				require.ErrorAs(t, err, &ra)
				require.Equal(t, tc.wantAfter, ra.After)
			case transient:
				require.Error(t, err)
				require.False(t, errors.As(err, &perm), "%v must be retried, not dead-lettered", err)
				require.False(t, errors.As(err, &ra))
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		sink := New(Config{URL: url, Bucket: "db", Measurement: "telemetry", Timeout: 5 * time.Second})
		defer sink.Close()
		err := sink.Write(context.Background(), []ingest.Reading{{DeviceID: "d1", Time: time.Unix(1, 0), Fields: []ingest.Field{{Name: "t", Value: ingest.Number(1)}}}})
		require.Error(t, err)
		var perm *ingest.PermanentError
		require.False(t, errors.As(err, &perm))
	})
}

func TestLineProtocolEscapes(t *testing.T) {
	r := ingest.Reading{DeviceID: "a b,c", DeviceType: "thermostat", Time: time.Unix(0, 42), Fields: []ingest.Field{
		{Name: "on", Value: ingest.Bool(true)}, {Name: "t x", Value: ingest.Number(21.5)}, {Name: "msg", Value: ingest.String(`say "hi" \ bye`)}}}
	require.Equal(t, `telemetry,device_id=a\ b\,c,device_type=thermostat on=true,t\ x=21.5,msg="say \"hi\" \\ bye" 42`,
		string(AppendLine(nil, "telemetry", r)))
}
