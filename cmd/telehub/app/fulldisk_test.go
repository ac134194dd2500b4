package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// readyz returns the status of /readyz and its problem JSON, if any.
func readyz(t *testing.T, a *App) (int, map[string]any) {
	t.Helper()
	res, err := http.Get("http://" + a.HTTPAddr() + "/readyz")
	require.NoError(t, err)
	defer res.Body.Close()
	var p map[string]any
	if res.Header.Get("Content-Type") == "application/problem+json" {
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	}
	return res.StatusCode, p
}

// TestFullDiskIsReportedAndRefusedFast puts the durable log on a real file
// system that fills up (a 2 MiB tmpfs). While the log cannot commit, the hub
// says so (/readyz 503 with the reason, metrics) and MQTT 5 devices get
// PUBACK 0x97 at once instead of silence; once there is room again it
// recovers by itself and stores what devices send.
func TestFullDiskIsReportedAndRefusedFast(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	testenv.SmallFS(t, logDir, "size=2m")
	a := startHubWith(t, dir, nil)
	big := func(tag string, ts int64) string { // a record larger than a page: it needs a new block
		pad := strings.Repeat("x", 4000)
		return fmt.Sprintf(`{"ts":%d,"tag":%q,"pad1":%q,"pad2":%q}`, ts, tag, pad, pad)
	}
	base := time.Now().Add(-time.Minute).UnixMilli()

	first := dialMQTT5(t, a, "disk-1")
	require.Equal(t, packets.CodeSuccess.Code, first.publish(t, "devices/disk-1/telemetry", big("before", base)))
	code, _ := readyz(t, a)
	require.Equal(t, http.StatusOK, code)

	free := testenv.FillFS(t, logDir)
	// The publish whose commit meets the full disk is not acknowledged: its
	// connection is closed, so the device sends it again.
	first.id++
	require.NoError(t, first.c.Publish("devices/disk-1/telemetry", 1, false, first.id, 0, []byte(big("lost", base+1)), packets.Properties{}))
	pk, err := first.c.Read(10 * time.Second)
	require.Error(t, err, "no PUBACK for a reading that is not on disk (got packet type %d)", pk.FixedHeader.Type)

	code, p := readyz(t, a)
	require.Equal(t, http.StatusServiceUnavailable, code, "a load balancer moves devices away")
	require.Equal(t, "durable log failing", p["title"])
	require.Contains(t, p["detail"], "no space left on device")
	m := proofMetrics(t, a)
	require.Equal(t, 1.0, m["telehub_log_commit_failing"])
	require.GreaterOrEqual(t, m["telehub_log_commit_failures_total"], 1.0)

	// While it fails, MQTT 5 devices are told at once: quota exceeded.
	second := dialMQTT5(t, a, "disk-2")
	for i := range 3 {
		require.Equal(t, packets.ErrQuotaExceeded.Code, second.publish(t, "devices/disk-2/telemetry", big("refused", base+2+int64(i))))
	}
	require.GreaterOrEqual(t, proofMetric(t, a, `telehub_ingest_rejected_total{reason="log_failing"}`), 3.0)
	bannerInBrowser(t, a, "failing")

	free()
	testenv.Eventually(t, 10*time.Second, "ready again once there is room", func() bool {
		code, _ := readyz(t, a)
		return code == http.StatusOK
	})
	require.Equal(t, 0.0, proofMetric(t, a, "telehub_log_commit_failing"))
	bannerInBrowser(t, a, "ok")
	require.Equal(t, packets.CodeSuccess.Code, second.publish(t, "devices/disk-2/telemetry", big("after", base+10)))
	testenv.Eventually(t, 10*time.Second, "the reading after the recovery is stored", func() bool {
		var h struct {
			Series []struct {
				Field  string `json:"field"`
				Values []any  `json:"values"`
			} `json:"series"`
		}
		apiGet(t, a, "/api/v1/devices/disk-2/telemetry?fields=tag&from=-1h", &h)
		return len(h.Series) == 1 && len(h.Series[0].Values) == 1 && h.Series[0].Values[0] == "after"
	})
}

// bannerInBrowser opens the dashboard in headless Chromium
// (web/test/banner.test.mjs) and checks its hub banner: "failing" shows the
// durable log's failure, "ok" shows none. It skips (fails under CI) without
// node, Chromium or playwright-core.
func bannerInBrowser(t *testing.T, a *App, expect string) {
	t.Helper()
	node := testenv.Tool(t, "node")
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, "Chromium ("+chromiumPath+", Debian package chromium)")
	}
	if _, err := os.Stat(filepath.Join(root, "web", "node_modules", "playwright-core", "package.json")); err != nil {
		testenv.Missing(t, "playwright-core (scripts/web-assets.sh installs web/package.json)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("web", "test", "banner.test.mjs"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TELEHUB_URL=http://"+a.HTTPAddr(), "TELEHUB_TOKEN="+a.AdminToken,
		"TELEHUB_EXPECT="+expect, "TELEHUB_CHROMIUM="+chromiumPath)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the banner browser check (%s) failed:\n%s", expect, out)
	t.Logf("banner browser check: %s", out)
}

// TestStopReportsALostFinalFlush puts the whole data directory on a small
// tmpfs, lets readings reach the embedded store's in-memory head and fills
// the disk before stopping: the store's final flush into history.db fails,
// and Stop says so instead of returning as if all went well (`telehub
// serve` then exits non-zero).
func TestStopReportsALostFinalFlush(t *testing.T) {
	dir := t.TempDir()
	testenv.SmallFS(t, dir, "size=32m")
	a := startHubWith(t, dir, func(cfg *config.Config) { cfg.WAL.SegmentBytes = 1 << 20 })
	dev := dialMQTT5(t, a, "flush-1")
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 20 {
		var b strings.Builder
		fmt.Fprintf(&b, `{"ts":%d`, base+int64(i))
		for f := range 50 {
			fmt.Fprintf(&b, `,"f%d":%d.5`, f, i*f)
		}
		b.WriteString("}")
		require.Equal(t, packets.CodeSuccess.Code, dev.publish(t, "devices/flush-1/telemetry", b.String()))
	}
	testenv.Eventually(t, 10*time.Second, "every reading is in the store, its head only", func() bool {
		got, err := a.Store().Query("flush-1", "f49", time.UnixMilli(base-1), time.UnixMilli(base+20))
		require.NoError(t, err)
		return len(got) == 20
	})
	require.Positive(t, a.Store().HeadBytes())
	testenv.FillFS(t, dir)
	err := a.Stop()
	require.ErrorContains(t, err, "embedded store final flush")
	require.ErrorContains(t, err, "no space left on device")
	require.Equal(t, err, a.Stop(), "a second Stop returns the same error")
}
