package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
	"github.com/telehub/telehub/internal/testenv"
)

// chromiumPath is Debian's Chromium, which scripts/deps.sh installs.
const chromiumPath = "/usr/bin/chromium"

// TestDashboardInBrowser drives the dashboard in headless Chromium
// (web/test/dashboard.test.mjs, playwright-core) against a real hub with a
// simulated fleet, 2,000 silent devices and a "lab" thermostat that has 15
// minutes of history and keeps publishing. It proves that the page loads
// with a token, renders only the visible rows, shows live values, charts
// history plus live points, resumes after a dropped connection with exactly
// the stored points (no gap, no duplicate), and, where the hub has them,
// sends a command that succeeds and acknowledges an alert, and offers a
// viewer's token no command or state controls. It writes
// docs/dashboard.png and docs/dashboard-device.png.
func TestDashboardInBrowser(t *testing.T) {
	node := testenv.Tool(t, "node")
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, "Chromium ("+chromiumPath+", Debian package chromium)")
	}
	if _, err := os.Stat(filepath.Join(root, "web", "node_modules", "playwright-core", "package.json")); err != nil {
		testenv.Missing(t, "playwright-core (scripts/web-assets.sh installs web/package.json)")
	}
	if _, err := os.Stat(filepath.Join(root, "web", "static", "vendor", "uPlot.iife.min.js")); err != nil {
		testenv.Missing(t, "the chart library in web/static/vendor (scripts/web-assets.sh)")
	}

	a := startHub(t, nil)
	base := "http://" + a.HTTPAddr()
	bulkDevices(t, a, 2000)
	lab := "lab-thermostat"
	startLabThermostat(t, a, lab)
	runFleetInBackground(t, a)
	testenv.Eventually(t, 15*time.Second, "the simulated fleet publishes", func() bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/devices/sim-thermo-0001", nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var d struct {
			Online bool           `json:"online"`
			Latest map[string]any `json:"latest"`
		}
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&d) == nil && d.Online && d.Latest["temperature"] != nil
	})

	// Screenshots go to docs/ for the README only when asked for
	// (TELEHUB_UPDATE_SCREENSHOTS=1, `make screenshots`); otherwise to a
	// temporary folder, so test runs leave the tree clean.
	shots := t.TempDir()
	if os.Getenv("TELEHUB_UPDATE_SCREENSHOTS") != "" {
		shots = filepath.Join(root, "docs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("web", "test", "dashboard.test.mjs"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"TELEHUB_URL="+base,
		"TELEHUB_TOKEN="+a.AdminToken,
		"TELEHUB_LAB_DEVICE="+lab,
		"TELEHUB_CMD_DEVICE=sim-thermo-0001",
		"TELEHUB_BULK=2000",
		"TELEHUB_SCREENSHOTS="+shots,
		"TELEHUB_CHROMIUM="+chromiumPath,
	)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the browser test failed:\n%s", out)
	t.Logf("browser test:\n%s", out)
	require.Contains(t, string(out), "ok   after a dropped connection the chart resumes with no gap and no duplicate")
	require.Contains(t, string(out), "ok   a viewer's token gets a read-only page")
	require.FileExists(t, filepath.Join(shots, "dashboard.png"))
}

// TestDashboardChartPoints runs the page's unit tests under node --test:
// the chart point store keeps each point once and in order whatever order
// history and live points arrive in.
func TestDashboardChartPoints(t *testing.T) {
	node := testenv.Tool(t, "node")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--no-warnings", "--test", filepath.Join("web", "test", "dashboard-series.test.mjs"))
	cmd.Dir = filepath.Join("..", "..", "..")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "# fail 0")
}

// bulkDevices registers n devices that never connect, 1,000 per call.
func bulkDevices(t *testing.T, a *App, n int) {
	t.Helper()
	types := []string{"thermostat", "wearable", "gateway"}
	for start := 0; start < n; start += 1000 {
		var req struct {
			Devices []map[string]any `json:"devices"`
		}
		for i := start; i < min(n, start+1000); i++ {
			req.Devices = append(req.Devices, map[string]any{
				"id": fmt.Sprintf("bulk-%05d", i), "type": types[i%len(types)],
				"labels": map[string]string{"site": fmt.Sprintf("site-%d", i%7), "floor": fmt.Sprint(i % 4)},
			})
		}
		body, err := json.Marshal(req)
		require.NoError(t, err)
		hr, _ := http.NewRequest(http.MethodPost, "http://"+a.HTTPAddr()+"/api/v1/devices/bulk", bytes.NewReader(body))
		hr.Header.Set("Authorization", "Bearer "+a.AdminToken)
		resp, err := http.DefaultClient.Do(hr)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
}

// startLabThermostat registers a thermostat, publishes 15 minutes of its
// history in one batch (the firmware model stepped through the past), then
// publishes a reading every 250 ms until the test ends.
func startLabThermostat(t *testing.T, a *App, id string) {
	t.Helper()
	tok := createDevice(t, a, id, firmwaresim.TypeThermostat)
	c, err := connect(t, a, id, tok)
	require.NoError(t, err)
	model := firmwaresim.NewThermostat(rand.New(rand.NewPCG(7, 7)))
	now := time.Now()
	var batch []map[string]any
	for at := now.Add(-15 * time.Minute); at.Before(now); at = at.Add(5 * time.Second) {
		r := model.Step(at)
		r["ts"] = at.UnixMilli()
		batch = append(batch, r)
	}
	payload, err := json.Marshal(batch)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/"+id+"/telemetry", string(payload)))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case at := <-tick.C:
				r := model.Step(at)
				r["ts"] = at.UnixMilli()
				b, _ := json.Marshal(r)
				tok := c.Publish("devices/"+id+"/telemetry", 1, false, b)
				select {
				case <-tok.Done():
				case <-ctx.Done():
					return
				}
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// runFleetInBackground runs three simulated thermostats and three wearables
// (which execute commands) until the test ends.
func runFleetInBackground(t *testing.T, a *App) {
	t.Helper()
	cfg := firmwaresim.DefaultConfig()
	cfg.HubURL = "http://" + a.HTTPAddr()
	cfg.MQTTURL = "tcp://" + a.MQTTAddr()
	cfg.Token = a.AdminToken
	cfg.Thermostats, cfg.Wearables = 3, 3
	cfg.Interval = time.Second
	cfg.DrainTimeout = time.Second
	f, err := firmwaresim.New(cfg, testenv.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.Run(ctx); err != nil && !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("fleet: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}
