package config

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestShippedConfigsLoad loads every YAML file in configs/ the way `telehub
// serve --config` does, so that a renamed or removed key breaks the build
// instead of a deployment.
func TestShippedConfigsLoad(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(t), "configs")
	files, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 2, "the example and the Pi profile at least")
	noEnv := func(string) string { return "" }
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load("telehub serve", []string{"--config", f}, noEnv, io.Discard)
			require.NoError(t, err)
			require.Empty(t, cfg.Deprecations, "shipped configs use the current names")
		})
	}
}

// TestPiProfile checks what the small-board profile promises: bounded
// buffers and batched fsync that still acknowledges only what is on disk.
func TestPiProfile(t *testing.T) {
	f := filepath.Join(testenv.RepoRoot(t), "configs", "telehub.pi.yaml")
	cfg, err := Load("telehub serve", []string{"--config", f}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	def := Default()
	require.True(t, cfg.WAL.Fsync, "acknowledged readings survive a power cut")
	require.Positive(t, cfg.WAL.SyncInterval, "fsyncs are batched")
	require.LessOrEqual(t, cfg.WAL.SyncInterval, 250*time.Millisecond, "devices do not wait long for their PUBACK")
	require.Less(t, cfg.WAL.MaxBytes, def.WAL.MaxBytes, "a smaller durable log for an SD card")
	require.Less(t, cfg.Live.ReplayBuffer, def.Live.ReplayBuffer)
	require.Less(t, cfg.MQTT.MaxPacketBytes, def.MQTT.MaxPacketBytes)
	require.Less(t, cfg.MQTT.WriteQueue, def.MQTT.WriteQueue, "each client's preallocated queue is small")
	require.Less(t, cfg.Store.FlushBytes, def.Store.FlushBytes, "a small head")
	require.Less(t, cfg.Ingest.MaxFieldsPerDevice, def.Ingest.MaxFieldsPerDevice, "fewer fields per device")
	require.Equal(t, "/var/lib/telehub", cfg.DataDir)
}

// TestSystemdUnit checks the hardened unit against the Pi profile: it runs
// as its own user, may write the profile's data directory and nothing else,
// restarts on failure and sets the Go memory limit.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open(filepath.Join(testenv.RepoRoot(t), "configs", "telehub.service"))
	require.NoError(t, err)
	defer f.Close()
	unit := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	require.NoError(t, sc.Err())
	want := map[string]string{
		"User":                  "telehub",
		"ProtectSystem":         "strict",
		"ReadWritePaths":        "/var/lib/telehub",
		"StateDirectory":        "telehub",
		"Restart":               "on-failure",
		"NoNewPrivileges":       "yes",
		"CapabilityBoundingSet": "",
		"ProtectHome":           "yes",
		"PrivateTmp":            "yes",
		"PrivateDevices":        "yes",
		"ExecStart":             "/usr/local/bin/telehub serve --config /etc/telehub/telehub.yaml",
	}
	for k, v := range want {
		require.Equal(t, []string{v}, unit[k], k)
	}
	require.Contains(t, unit["Environment"], "GOMEMLIMIT=64MiB")
}
