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
	_, err := Load("serve", []string{"--config", "../../../configs/telehub.example.yaml"}, env(nil), io.Discard)
	require.NoError(t, err)
}

// TestSwitches parses the bool settings as the README documents them: a
// bare switch, =true, =false, and a switch followed by another flag.
func TestSwitches(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		env       map[string]string
		anonymous bool
		fsync     bool
		httpAddr  string
		wantErr   string
	}{
		{name: "defaults", args: nil, fsync: true, httpAddr: ":8080"},
		{name: "bare switch", args: []string{"--allow-anonymous"}, anonymous: true, fsync: true, httpAddr: ":8080"},
		{name: "single dash", args: []string{"-allow-anonymous"}, anonymous: true, fsync: true, httpAddr: ":8080"},
		{name: "=true", args: []string{"--allow-anonymous=true"}, anonymous: true, fsync: true, httpAddr: ":8080"},
		{name: "=false", args: []string{"--fsync=false"}, fsync: false, httpAddr: ":8080"},
		{name: "=false over env", args: []string{"--allow-anonymous=false"}, env: map[string]string{"TELEHUB_ALLOW_ANONYMOUS": "true"}, fsync: true, httpAddr: ":8080"},
		{name: "env alone", env: map[string]string{"TELEHUB_FSYNC": "false"}, fsync: false, httpAddr: ":8080"},
		{name: "followed by another flag", args: []string{"--allow-anonymous", "--http-addr", ":9"}, anonymous: true, fsync: true, httpAddr: ":9"},
		{name: "last of several", args: []string{"--http-addr", ":9", "--fsync=false", "--allow-anonymous"}, anonymous: true, httpAddr: ":9"},
		{name: "value after a space", args: []string{"--fsync", "false"}, wantErr: "--fsync=false"},
		{name: "not a bool", args: []string{"--fsync=maybe"}, wantErr: `--fsync: "maybe" is not true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load("serve", tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.anonymous, cfg.MQTT.AllowAnonymous, "allow anonymous")
			require.Equal(t, tc.fsync, cfg.WAL.Fsync, "fsync")
			require.Equal(t, tc.httpAddr, cfg.HTTP.Addr, "http addr")
		})
	}
}

// TestDeprecatedLogNames loads the durable log's settings under their old
// names (the log: section, --log-max-bytes, TELEHUB_LOG_SYNC_INTERVAL):
// they set the new wal settings and each yields a deprecation; an old and
// a new name for the same setting together are an error.
func TestDeprecatedLogNames(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		return path
	}
	old := write("old.yaml", "log:\n  max_bytes: 1048576\n  segment_bytes: 65536\n  fsync: false\n  sync_interval: 100ms\n")
	cfg, err := Load("serve", []string{"--config", old}, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, WALConfig{MaxBytes: 1 << 20, SegmentBytes: 64 << 10, Fsync: false, SyncInterval: 100 * time.Millisecond}, cfg.WAL)
	require.Equal(t, []Deprecation{
		{Old: "config key log.max_bytes", New: "wal.max_bytes"},
		{Old: "config key log.segment_bytes", New: "wal.segment_bytes"},
		{Old: "config key log.fsync", New: "wal.fsync"},
		{Old: "config key log.sync_interval", New: "wal.sync_interval"},
	}, cfg.Deprecations)

	mixed := write("mixed.yaml", "log:\n  max_bytes: 1048576\nwal:\n  sync_interval: 5ms\n")
	cfg, err = Load("serve", []string{"--config", mixed}, env(nil), io.Discard)
	require.NoError(t, err, "different keys under the old and the new section")
	require.Equal(t, int64(1<<20), cfg.WAL.MaxBytes)
	require.Equal(t, 5*time.Millisecond, cfg.WAL.SyncInterval)
	require.Len(t, cfg.Deprecations, 1)

	both := write("both.yaml", "log:\n  max_bytes: 1048576\nwal:\n  max_bytes: 2097152\n")
	_, err = Load("serve", []string{"--config", both}, env(nil), io.Discard)
	require.ErrorContains(t, err, "log.max_bytes and wal.max_bytes are both set")

	cfg, err = Load("serve", []string{"--log-max-bytes", "2097152"}, env(map[string]string{"TELEHUB_LOG_SYNC_INTERVAL": "20ms"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, int64(2<<20), cfg.WAL.MaxBytes)
	require.Equal(t, 20*time.Millisecond, cfg.WAL.SyncInterval)
	require.Equal(t, []Deprecation{
		{Old: "environment variable TELEHUB_LOG_SYNC_INTERVAL", New: "TELEHUB_WAL_SYNC_INTERVAL"},
		{Old: "flag --log-max-bytes", New: "--wal-max-bytes"},
	}, cfg.Deprecations)

	_, err = Load("serve", []string{"--log-max-bytes", "2097152", "--wal-max-bytes", "1048576"}, env(nil), io.Discard)
	require.ErrorContains(t, err, "--log-max-bytes and --wal-max-bytes are both given")
	_, err = Load("serve", nil, env(map[string]string{"TELEHUB_LOG_MAX_BYTES": "2097152", "TELEHUB_WAL_MAX_BYTES": "1048576"}), io.Discard)
	require.ErrorContains(t, err, "TELEHUB_LOG_MAX_BYTES and TELEHUB_WAL_MAX_BYTES are both set")

	cfg, err = Load("serve", []string{"--wal-max-bytes", "1048576"}, env(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, int64(1<<20), cfg.WAL.MaxBytes)
	require.Empty(t, cfg.Deprecations, "the new names are not deprecated")
}
