package app

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/testenv"
)

// With InfluxDB unreachable (an edge hub whose uplink is down), the local
// window still answers the history API, and the readings wait in the
// durable log for InfluxDB.
func TestLocalWindowAnswersWhileInfluxIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused

	a := startHubWith(t, t.TempDir(), func(cfg *config.Config) {
		cfg.Influx.URL, cfg.Influx.Bucket = deadURL, "telehub"
		cfg.Store.LocalWindow = time.Hour
		cfg.Writer.DrainTimeout = time.Millisecond // InfluxDB never answers: do not wait at stop
	})

	tok := createDevice(t, a, "edge-1", "thermostat")
	c, err := connect(t, a, "edge-1", tok)
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, publish(t, c, "devices/edge-1/telemetry", fmt.Sprintf(`{"temperature":%d}`, 20+i)))
	}
	var resp struct {
		Series []ingest.Series `json:"series"`
	}
	testenv.Eventually(t, 10*time.Second, "history from the local window", func() bool {
		apiGet(t, a, "/api/v1/devices/edge-1/telemetry?fields=temperature&from=-5m", &resp)
		return len(resp.Series) == 1 && len(resp.Series[0].Values) == 5
	})
	require.Equal(t, []any{20.0, 21.0, 22.0, 23.0, 24.0}, resp.Series[0].Values)
	require.Positive(t, a.wal.Stats().Committed-a.wal.Consumed(), "the readings wait in the log for InfluxDB")
}

// The pending-readings gauge counts readings, also those left in the log by
// a previous run.
func TestPendingReadingsMetricCountsTheBacklog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	deadInflux := func(cfg *config.Config) {
		cfg.Influx.URL, cfg.Influx.Bucket = deadURL, "telehub"
		cfg.Writer.DrainTimeout = time.Millisecond
	}
	a := startHubWith(t, dir, deadInflux)
	tok := createDevice(t, a, "pend-1", "thermostat")
	c, err := connect(t, a, "pend-1", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/pend-1/telemetry", `[{"a":1},{"a":2},{"a":3}]`))
	require.NoError(t, publish(t, c, "devices/pend-1/telemetry", `{"a":4}`))
	require.Equal(t, 4.0, scrape(t, a, "telehub_log_pending_readings"))
	c.Disconnect(0)
	a.Stop()

	b := startHubWith(t, dir, deadInflux)
	require.Equal(t, 4.0, scrape(t, b, "telehub_log_pending_readings"), "the backlog of the last run")
}

func scrape(t *testing.T, a *App, name string) float64 {
	t.Helper()
	m, err := testenv.Metrics("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	v, ok := m[name]
	require.True(t, ok, "metric %s missing", name)
	return v
}
