package forward

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// TestPayloadRoundTrips: what the forwarder sends decodes, with the hub's
// own decoder, to exactly the readings it read from the log: timestamps to
// the nanosecond, value kinds, awkward names and strings.
func TestPayloadRoundTrips(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name string
		rs   []ingest.Reading
	}{
		{"one reading", []ingest.Reading{{Time: at, Fields: []ingest.Field{
			{Name: "heating", Value: ingest.Bool(true)},
			{Name: "mode", Value: ingest.String("heat")},
			{Name: "temperature", Value: ingest.Number(21.5)},
		}}}},
		{"a batch", []ingest.Reading{
			{Time: at, Fields: []ingest.Field{{Name: "n", Value: ingest.Number(1)}}},
			{Time: at.Add(time.Nanosecond), Fields: []ingest.Field{{Name: "n", Value: ingest.Number(2)}}},
			{Time: at.Add(time.Hour), Fields: []ingest.Field{{Name: "off", Value: ingest.Bool(false)}}},
		}},
		{"flattened names and hostile strings", []ingest.Reading{{Time: at, Fields: []ingest.Field{
			{Name: "gps.lat", Value: ingest.Number(-33.865143)},
			{Name: `na"me\`, Value: ingest.String("line\nbreak \"quoted\" \u00e9 <tag> \u2028")},
		}}}},
		{"extreme numbers", []ingest.Reading{{Time: time.Unix(0, 0).UTC(), Fields: []ingest.Field{
			{Name: "big", Value: ingest.Number(math.MaxFloat64)},
			{Name: "neg", Value: ingest.Number(-1e-300)},
			{Name: "zero", Value: ingest.Number(0)},
		}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := appendPayload(nil, tc.rs)
			pts, err := ingest.Decode(b, ingest.FormatAuto, time.Now(), ingest.DefaultLimits())
			require.NoError(t, err, "%s", b)
			require.Len(t, pts, len(tc.rs))
			for i, p := range pts {
				require.Equal(t, tc.rs[i].Time, p.Time, "%s", b)
				require.ElementsMatch(t, tc.rs[i].Fields, p.Fields, "%s", b)
			}
		})
	}
}

func TestTopicTemplate(t *testing.T) {
	require.Equal(t, "devices/t1/telemetry", topic(DefaultConfig().Topic, "t1", "thermostat"))
	require.Equal(t, "site/a/thermostat/t1", topic("site/a/{device_type}/{device_id}", "t1", "thermostat"))
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.URL = "mqtts://hub.example.com:8883"
	tests := []struct {
		name string
		edit func(*Config)
		want string // empty: valid
	}{
		{"off by default", func(c *Config) { c.URL = "" }, ""},
		{"valid", func(*Config) {}, ""},
		{"websocket", func(c *Config) { c.URL = "wss://hub.example.com/mqtt" }, ""},
		{"no host", func(c *Config) { c.URL = "mqtts://" }, "forward.url"},
		{"unknown scheme", func(c *Config) { c.URL = "http://hub:80" }, "scheme"},
		{"two passwords", func(c *Config) { c.Password, c.PasswordFile = "a", "/f" }, "give one"},
		{"cert without key", func(c *Config) { c.CertFile = "/c" }, "go together"},
		{"topic without device", func(c *Config) { c.Topic = "telemetry" }, "{device_id}"},
		{"wildcard topic", func(c *Config) { c.Topic = "devices/{device_id}/#" }, "wildcards"},
		{"bad alert topic", func(c *Config) { c.Alerts, c.AlertTopic = true, "alerts" }, "forward.alert_topic"},
		{"qos 0", func(c *Config) { c.QoS = 0 }, "qos"},
		{"no inflight", func(c *Config) { c.MaxInflight = 0 }, "max_inflight"},
		{"short timeout", func(c *Config) { c.AckTimeout = time.Millisecond }, "ack_timeout"},
		{"backoff upside down", func(c *Config) { c.RetryMin, c.RetryMax = time.Minute, time.Second }, "retry_min"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestLoadReadsThePasswordFileAndDefaultsTheClientID(t *testing.T) {
	c := DefaultConfig()
	c.URL = "mqtt://127.0.0.1:1"
	c.PasswordFile = t.TempDir() + "/secret"
	_, err := c.load()
	require.ErrorContains(t, err, "password_file")

	require.NoError(t, writeFile(c.PasswordFile, "s3cret\n"))
	s, err := c.load()
	require.NoError(t, err)
	require.Equal(t, "s3cret", s.password)
	require.Contains(t, s.clientID, "telehub-edge-")
	require.Nil(t, s.tls, "no TLS for mqtt://")

	c.URL, c.CAFile = "mqtts://127.0.0.1:1", c.PasswordFile
	_, err = c.load()
	require.ErrorContains(t, err, "no PEM certificate")
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
