package app

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// scrapeAs returns the body and content type of the hub's /metrics, asking
// for accept.
func scrapeAs(t *testing.T, a *App, accept string) (string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+"/metrics", nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body), resp.Header.Get("Content-Type")
}

// The hub's real /metrics passes `promtool check metrics` (names, units,
// types, help), with every part that registers metrics turned on: the
// embedded store as a local window beside InfluxDB, and the forwarder.
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool (Debian package prometheus)")
	}
	a := startHubWith(t, t.TempDir(), func(cfg *config.Config) {
		cfg.Influx.URL, cfg.Influx.Bucket = "http://127.0.0.1:1", "unused" // never reached: the metrics are registered all the same
		cfg.Store.LocalWindow = cfg.Store.Retention
		cfg.Forward.URL = "mqtt://127.0.0.1:1"
	})
	text, typ := scrapeAs(t, a, "")
	require.True(t, strings.HasPrefix(typ, "text/plain"), typ)
	for _, name := range []string{"telehub_store_batch_latency_seconds_bucket", "telehub_local_store_batch_latency_seconds_bucket",
		"telehub_forward_lag_seconds", "telehub_log_commits_total", `telehub_ingest_rejected_total{reason="fields"}`,
		"go_goroutines", "process_resident_memory_bytes"} {
		require.Contains(t, text, "\n"+name, "exposed")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), "promtool check metrics:\n%s", out.String())

	// A scraper that asks for OpenMetrics gets it.
	text, typ = scrapeAs(t, a, "application/openmetrics-text; version=1.0.0")
	require.True(t, strings.HasPrefix(typ, "application/openmetrics-text"), typ)
	require.True(t, strings.HasSuffix(text, "# EOF\n"), "OpenMetrics ends with # EOF")
}

// A QoS 1 reading streamed to a WebSocket client and stored shows in the
// three latency histograms: its PUBACK's wait for the log, its delay to the
// live client, and its store batch.
func TestLatencyHistogramsObserveAReading(t *testing.T) {
	a := startHub(t, nil)
	ws := dialLive(t, a)
	tok := createDevice(t, a, "dev-lat", "thermostat")
	c, err := connect(t, a, "dev-lat", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/dev-lat/telemetry", `{"temperature":21.5}`))
	testenv.Eventually(t, 10*time.Second, "reading streamed", func() bool { return ws.count("dev-lat") > 0 })
	url := "http://" + a.HTTPAddr() + "/metrics"
	for _, name := range []string{"telehub_mqtt_puback_latency_seconds_count", "telehub_live_delay_seconds_count",
		"telehub_store_batch_latency_seconds_count"} {
		testenv.Eventually(t, 10*time.Second, name+" observed", func() bool {
			m, err := testenv.Metrics(url)
			require.NoError(t, err)
			return m[name] >= 1
		})
	}
}
