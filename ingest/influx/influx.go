// Package influx is the InfluxDB implementation of the ingest.Sink and
// ingest.History contract: readings written as line protocol through the
// v2 write API (InfluxDB 2.x, or 1.8 through its compatibility endpoints)
// and read back with Flux. The embedded store (ingest/store) is the other
// implementation; app chooses one.
package influx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/telehub/telehub/ingest"
)

// Config says where readings are stored in InfluxDB. With InfluxDB 1.8
// the token is "user:password" (or empty), the org is ignored and the bucket
// is "database/retention-policy" or just "database".
type Config struct {
	URL         string        `yaml:"url"`
	Token       string        `yaml:"token"`
	Org         string        `yaml:"org"`
	Bucket      string        `yaml:"bucket"`
	Measurement string        `yaml:"measurement"`
	Timeout     time.Duration `yaml:"timeout"`
}

// Enabled reports whether InfluxDB is configured.
func (c Config) Enabled() bool { return c.URL != "" }

// Validate checks the values.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("influx.url %q must start with http:// or https://", c.URL)
	}
	if c.Bucket == "" {
		return errors.New("influx.bucket is required when influx.url is set")
	}
	if c.Measurement == "" {
		return errors.New("influx.measurement must not be empty")
	}
	return nil
}

// DB writes readings to InfluxDB through its v2 write API. Each reading is
// a point of the configured measurement (default "telemetry") with the tags
// device_id and device_type, its fields as fields and the device's timestamp
// in nanoseconds, so a replayed reading overwrites itself instead of
// duplicating. Safe for concurrent use.
type DB struct {
	client influxdb2.Client
	write  api.WriteAPIBlocking
	meas   string
	org    string
	bucket string
}

var _ ingest.Sink = (*DB)(nil)

// New returns a sink for cfg.
func New(cfg Config) *DB {
	opts := influxdb2.DefaultOptions().SetHTTPRequestTimeout(uint(max(cfg.Timeout, time.Second) / time.Second)).
		SetPrecision(time.Nanosecond).SetUseGZip(false)
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, opts)
	return &DB{client: client, write: client.WriteAPIBlocking(cfg.Org, cfg.Bucket), meas: cfg.Measurement,
		org: cfg.Org, bucket: cfg.Bucket}
}

// Write sends the readings in one request. An answer that refuses the
// request's content (400: unparsable line protocol, a field type conflict, a
// point outside the retention policy; 413: too large; 422) is a
// *PermanentError, so the writer isolates the readings at fault; 429 and 503
// are *RetryAfterError. Every other failure is a plain error, retried: a
// network error, a 5xx, and also 401, 403 and 404 (a bad token, a database or
// bucket that does not exist yet), which are faults of the store and not of
// the readings, and must not send every reading to the dead letters.
func (s *DB) Write(ctx context.Context, rs []ingest.Reading) error {
	var sb strings.Builder
	sb.Grow(len(rs) * 96)
	buf := make([]byte, 0, 256)
	for i, r := range rs {
		if i > 0 {
			sb.WriteByte('\n')
		}
		buf = AppendLine(buf[:0], s.meas, r)
		sb.Write(buf)
	}
	err := s.write.WriteRecord(ctx, sb.String())
	if err == nil {
		return nil
	}
	var he *ihttp.Error
	if errors.As(err, &he) {
		switch he.StatusCode {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			return &ingest.RetryAfterError{Err: fmt.Errorf("influx write: %w", err), After: time.Duration(he.RetryAfter) * time.Second}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			return &ingest.PermanentError{Err: fmt.Errorf("influx write: status %d: %w", he.StatusCode, err)}
		}
		if he.StatusCode != 0 {
			return fmt.Errorf("influx write: status %d: %w", he.StatusCode, err)
		}
	}
	return fmt.Errorf("influx write: %w", err)
}

// Close releases the client's connections.
func (s *DB) Close() { s.client.Close() }

// AppendLine appends the line protocol of a reading.
func AppendLine(b []byte, measurement string, r ingest.Reading) []byte {
	b = appendEscaped(b, measurement, ", ")
	b = append(b, ",device_id="...)
	b = appendEscaped(b, r.DeviceID, ", =")
	if r.DeviceType != "" {
		b = append(b, ",device_type="...)
		b = appendEscaped(b, r.DeviceType, ", =")
	}
	for i, f := range r.Fields {
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		b = appendEscaped(b, f.Name, ", =")
		b = append(b, '=')
		switch f.Value.Kind {
		case ingest.KindNumber:
			b = strconv.AppendFloat(b, f.Value.Num, 'g', -1, 64)
		case ingest.KindBool:
			b = strconv.AppendBool(b, f.Value.Bool)
		default:
			b = append(b, '"')
			b = appendEscaped(b, f.Value.Str, `"\`)
			b = append(b, '"')
		}
	}
	b = append(b, ' ')
	return strconv.AppendInt(b, r.Time.UnixNano(), 10)
}

func appendEscaped(b []byte, s, special string) []byte {
	for i := range len(s) {
		c := s[i]
		switch {
		case c == '\n':
			b = append(b, `\n`...)
			continue
		case strings.IndexByte(special, c) >= 0:
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return b
}
