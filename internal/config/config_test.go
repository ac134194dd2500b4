package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPrecedenceFlagOverEnvOverFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telehub.yaml")
	require.NoError(t, os.WriteFile(path, []byte("mqtt:\n  addr: ':1000'\nhttp:\n  addr: ':2000'\ndata_dir: /file\nwriter:\n  flush_interval: 250ms\n"), 0o600))
	cfg, err := Load("serve", []string{"--config", path, "--http-addr", ":3000"}, env(map[string]string{
		"TELEHUB_HTTP_ADDR": ":2500", "TELEHUB_DATA_DIR": "/env", "TELEHUB_INFLUX_URL": "http://127.0.0.1:8086",
	}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":1000", cfg.MQTT.Addr, "file")
	require.Equal(t, "/env", cfg.DataDir, "env over file")
	require.Equal(t, ":3000", cfg.HTTP.Addr, "flag over env")
	require.Equal(t, "http://127.0.0.1:8086", cfg.Influx.URL)
	require.Equal(t, 250*time.Millisecond, cfg.Writer.FlushInterval)
	require.Equal(t, 5000, cfg.Writer.BatchSize, "default kept")
}

func TestRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "mqtt:\n  adress: ':1'\n", "field adress not found"},
		{"bad level", "log_level: loud\n", "log_level"},
		{"bad influx url", "influx:\n  url: localhost:8086\n", "influx.url"},
		{"bad duration", "writer:\n  flush_interval: soon\n", "soon"},
		{"negative write_every", "live:\n  write_every: -1ms\n", "live.write_every"},
		{"no fields allowed", "ingest:\n  max_fields_per_device: 0\n", "ingest.max_fields_per_device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.yaml), 0o600))
			_, err := Load("serve", []string{"--config", path}, env(nil), io.Discard)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := Load("serve", []string{"--batch-size", "many"}, env(nil), io.Discard)
	require.ErrorContains(t, err, "--batch-size")
}

func TestExampleConfigLoads(t *testing.T) {
	_, err := Load("serve", []string{"--config", "../../configs/telehub.example.yaml"}, env(nil), io.Discard)
	require.NoError(t, err)
}
