package influx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	lp "github.com/influxdata/line-protocol"
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

// influxBatch is a realistic write batch: 5,000 readings of the simulator's
// two device types (a thermostat's five fields, one a bool and one a string;
// a wearable's three), at one reading per device per second.
func influxBatch() []ingest.Reading {
	start := time.Unix(1_765_000_000, 123_456_789)
	rs := make([]ingest.Reading, 5000)
	for i := range rs {
		n := float64(i)
		r := ingest.Reading{Time: start.Add(time.Duration(i/500) * time.Second)}
		if i%2 == 0 {
			r.DeviceID, r.DeviceType = fmt.Sprintf("thermo-%04d", i%500), "thermostat"
			r.Fields = []ingest.Field{
				{Name: "temperature", Value: ingest.Number(20.5 + n/1000)}, {Name: "setpoint", Value: ingest.Number(21)}, {Name: "humidity", Value: ingest.Number(41.25 + n/3000)},
				{Name: "heating", Value: ingest.Bool(i%4 == 0)}, {Name: "mode", Value: ingest.String("heat")},
			}
		} else {
			r.DeviceID, r.DeviceType = fmt.Sprintf("wear-%04d", i%500), "wearable"
			r.Fields = []ingest.Field{{Name: "heart_rate", Value: ingest.Number(60 + float64(i%40))}, {Name: "steps", Value: ingest.Number(float64(i * 7))}, {Name: "battery", Value: ingest.Number(3.7 - n/100000)}}
		}
		rs[i] = r
	}
	return rs
}

// encodeOurs is the body Influx.Write sends: AppendLine per reading.
func encodeOurs(meas string, rs []ingest.Reading) string {
	var sb strings.Builder
	sb.Grow(len(rs) * 96)
	buf := make([]byte, 0, 256)
	for i, r := range rs {
		if i > 0 {
			sb.WriteByte('\n')
		}
		buf = AppendLine(buf[:0], meas, r)
		sb.Write(buf)
	}
	return sb.String()
}

// encodeClient is the body the client library would send for the same
// readings through WriteAPIBlocking.WritePoint: a write.Point per reading,
// encoded by the line-protocol encoder with the client's settings
// (internal/write.Service.EncodePoints).
func encodeClient(meas string, rs []ingest.Reading) string {
	var buf bytes.Buffer
	e := lp.NewEncoder(&buf)
	e.SetFieldTypeSupport(lp.UintSupport)
	e.FailOnFieldErr(true)
	e.SetPrecision(time.Nanosecond)
	for _, r := range rs {
		p := write.NewPointWithMeasurement(meas).AddTag("device_id", r.DeviceID).AddTag("device_type", r.DeviceType).SetTime(r.Time)
		for _, f := range r.Fields {
			switch f.Value.Kind {
			case ingest.KindNumber:
				p.AddField(f.Name, f.Value.Num)
			case ingest.KindBool:
				p.AddField(f.Name, f.Value.Bool)
			default:
				p.AddField(f.Name, f.Value.Str)
			}
		}
		if _, err := e.Encode(p); err != nil {
			panic(err)
		}
	}
	return buf.String()
}

// The two encodings of the benchmark's batch say the same thing: parsed
// back, the same points with the same tags, fields and times.
func TestInfluxEncodingsAgree(t *testing.T) {
	rs := influxBatch()
	parse := func(body string) []lp.Metric {
		ms, err := lp.NewParser(lp.NewMetricHandler()).Parse([]byte(body))
		require.NoError(t, err)
		return ms
	}
	ours, theirs := parse(encodeOurs("telemetry", rs)), parse(encodeClient("telemetry", rs))
	require.Len(t, ours, len(rs))
	require.Len(t, theirs, len(rs))
	for i := range ours {
		require.Equal(t, theirs[i].Name(), ours[i].Name())
		require.Equal(t, theirs[i].TagList(), ours[i].TagList())
		require.Equal(t, theirs[i].FieldList(), ours[i].FieldList())
		require.True(t, theirs[i].Time().Equal(ours[i].Time()))
	}
}

// BenchmarkInfluxEncode: the line protocol of a 5,000-reading batch, by our
// AppendLine (what Influx.Write does) and by the client library's
// write.Point and encoder. The figures are in docs/architecture.md.
func BenchmarkInfluxEncode(b *testing.B) {
	rs := influxBatch()
	for _, enc := range []struct {
		name string
		fn   func(string, []ingest.Reading) string
	}{{"AppendLine", encodeOurs}, {"client", encodeClient}} {
		b.Run(enc.name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(enc.fn("telemetry", rs))
			}
			b.SetBytes(int64(n))
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(rs)), "ns/reading")
		})
	}
}

func TestLineProtocolEscapes(t *testing.T) {
	r := ingest.Reading{DeviceID: "a b,c", DeviceType: "thermostat", Time: time.Unix(0, 42), Fields: []ingest.Field{
		{Name: "on", Value: ingest.Bool(true)}, {Name: "t x", Value: ingest.Number(21.5)}, {Name: "msg", Value: ingest.String(`say "hi" \ bye`)}}}
	require.Equal(t, `telemetry,device_id=a\ b\,c,device_type=thermostat on=true,t\ x=21.5,msg="say \"hi\" \\ bye" 42`,
		string(AppendLine(nil, "telemetry", r)))
}
