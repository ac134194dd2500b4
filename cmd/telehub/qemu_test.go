package main

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestArm64BuildRunsUnderQemu builds the static linux/arm64 binary that a
// Raspberry Pi runs (CGO_ENABLED=0, as `make release` does) and runs it
// under qemu user emulation: it reports its version, starts, accepts a
// device over MQTT, stores its reading in the embedded store, serves it
// back through the API, and shuts down cleanly on SIGTERM.
func TestArm64BuildRunsUnderQemu(t *testing.T) {
	qemu := testenv.Tool(t, "qemu-aarch64-static")
	bin := buildCross(t, "arm64", "v-qemu-test")

	f, err := elf.Open(bin)
	require.NoError(t, err)
	require.Equal(t, elf.EM_AARCH64, f.Machine, "an arm64 binary")
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "statically linked: no dynamic loader needed on the Pi")
	}
	f.Close()

	out, err := exec.Command(qemu, bin, "version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "telehub v-qemu-test\n", string(out))

	hub := newHubProcess(t, qemu, testenv.Influx{})
	httpAddr := strings.TrimPrefix(hub.url, "http://")
	hub.args = []string{bin, "serve", "--mqtt-addr", hub.mqtt, "--http-addr", httpAddr, "--data-dir", hub.dataDir}
	hub.start(t)
	token, err := os.ReadFile(filepath.Join(hub.dataDir, "admin.token"))
	require.NoError(t, err)
	admin := strings.TrimSpace(string(token))

	var dev struct {
		Token string `json:"token"`
	}
	status := apiCall(t, hub.url, admin, http.MethodPost, "/api/v1/devices", `{"id":"pi-1","type":"thermostat"}`, &dev)
	require.Equal(t, http.StatusCreated, status)

	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + hub.mqtt).SetClientID("pi-1").
		SetUsername("pi-1").SetPassword(dev.Token).SetAutoReconnect(false).SetConnectTimeout(20 * time.Second))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(30*time.Second), "connect")
	require.NoError(t, tok.Error())
	ts := time.Now().Add(-time.Minute).UnixMilli()
	tok = c.Publish("devices/pi-1/telemetry", 1, false, fmt.Sprintf(`{"ts":%d,"temperature":21.5}`, ts))
	require.True(t, tok.WaitTimeout(30*time.Second), "PUBACK")
	require.NoError(t, tok.Error())
	c.Disconnect(250)

	var hist struct {
		Series []struct {
			Field  string  `json:"field"`
			Times  []int64 `json:"times"`
			Values []any   `json:"values"`
		} `json:"series"`
	}
	testenv.Eventually(t, 30*time.Second, "the reading is stored and served by the API", func() bool {
		apiCall(t, hub.url, admin, http.MethodGet, "/api/v1/devices/pi-1/telemetry?fields=temperature&from=-1h", "", &hist)
		return len(hist.Series) == 1 && len(hist.Series[0].Times) == 1
	})
	require.Equal(t, ts, hist.Series[0].Times[0])
	require.Equal(t, 21.5, hist.Series[0].Values[0])

	require.NoError(t, hub.stop(), "a clean shutdown on SIGTERM")
}

// buildCross builds this command for linux/arch, statically, with version
// built in as `make release` does, into a temporary directory.
func buildCross(t *testing.T, arch, version string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "the go command")
	}
	bin := filepath.Join(t.TempDir(), "telehub-"+arch)
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build for linux/%s: %s", arch, out)
	return bin
}

// apiCall sends a request with the admin token and decodes a JSON answer
// into v; it returns the status.
func apiCall(t *testing.T, base, token, method, path, body string, v any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := readyClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode < 300 && v != nil {
		require.NoError(t, json.Unmarshal(b, v), "%s", b)
	}
	return resp.StatusCode
}
