package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// Databases on the shared influxd, one per writer.
const (
	dbTelehub  = "bench_telehub"
	dbTelegraf = "bench_telegraf"
	dbDirect   = "bench_direct"
)

// telehub is a running hub under test.
type telehub struct {
	*proc
	mqtt, http, token string
}

// startTelehub starts a hub with a fresh data directory under the work dir;
// with influx set it stores in dbTelehub there, else in its embedded store.
// The bench configuration differs from the defaults only in turning off the
// per-device message rate limit and the connect rate limit, which protect
// a real hub from misbehaving devices and would otherwise cap the offered
// load, the HTTP API's rate limit and connection cap (1,000 dashboards of
// one token open at once in the fan-out scenario), and in logging warnings
// only.
func (r *runner) startTelehub(ctx context.Context, name string, influx bool) (*telehub, error) {
	return r.startTelehubWith(ctx, name, influx, "")
}

// startTelehubWith is startTelehub with more YAML at the end of the
// configuration.
func (r *runner) startTelehubWith(ctx context.Context, name string, influx bool, extra string) (*telehub, error) {
	return r.launchTelehub(ctx, name, "", r.cfg.Telehub, nil, 30*time.Second, r.benchConfig(influx, extra))
}

// benchConfig returns the configuration of startTelehubWith.
func (r *runner) benchConfig(influx bool, extra string) func(dataDir, mqttAddr, httpAddr string) ([]byte, error) {
	return func(dataDir, mqttAddr, httpAddr string) ([]byte, error) {
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "data_dir: %q\nlog_level: warn\nmqtt:\n  addr: %q\n  connect_rate: 0\n  message_rate: 0\nhttp:\n  addr: %q\n  rate_limit: 0\n  max_connections: 0\n",
			dataDir, mqttAddr, httpAddr)
		if influx {
			fmt.Fprintf(&cfg, "influx:\n  url: %q\n  bucket: %q\n", r.cfg.InfluxURL, dbTelehub)
		}
		if r.cfg.TelehubYAML != "" {
			cfg.WriteString(strings.ReplaceAll(r.cfg.TelehubYAML, `\n`, "\n") + "\n")
		}
		cfg.WriteString(extra)
		return []byte(cfg.String()), nil
	}
}

// launchTelehub starts bin (under the emulator emu, when set) with env
// added, in a fresh directory under the work dir, with the configuration
// config returns for its data directory and listen addresses; it returns
// once the hub is ready, with its admin token.
func (r *runner) launchTelehub(ctx context.Context, name, emu, bin string, env []string, ready time.Duration,
	config func(dataDir, mqttAddr, httpAddr string) ([]byte, error)) (*telehub, error) {
	dir := filepath.Join(r.cfg.Dir, name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg, err := config(filepath.Join(dir, "data"), mqttAddr, httpAddr)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "telehub.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	args := []string{"serve", "--config", cfgPath}
	if emu != "" {
		args, bin = append([]string{bin}, args...), emu
	}
	p, err := startProc(r.cfg.Dir, name, env, bin, args...)
	if err != nil {
		return nil, err
	}
	t := &telehub{proc: p, mqtt: mqttAddr, http: "http://" + httpAddr}
	if err := waitFor(ctx, p, ready, name+" ready", httpOK(t.http+"/readyz")); err != nil {
		p.stop()
		return nil, err
	}
	tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		p.stop()
		return nil, err
	}
	t.token = strings.TrimSpace(string(tok))
	return t, nil
}

// provision registers n devices and returns their identities.
func (t *telehub) provision(ctx context.Context, prefix string, n int) ([]load.Device, error) {
	return load.Provision(ctx, t.http, t.token, load.DeviceIDs(prefix, n), "thermostat")
}

// peer is a running benchpeer (bare mochi-mqtt).
type peer struct {
	*proc
	mqtt, http string
}

func (r *runner) startPeer(ctx context.Context) (*peer, error) {
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProc(r.cfg.Dir, "benchpeer", nil, r.cfg.Benchpeer, "-mqtt", mqttAddr, "-http", httpAddr)
	if err != nil {
		return nil, err
	}
	pr := &peer{proc: p, mqtt: mqttAddr, http: "http://" + httpAddr}
	if err := waitFor(ctx, p, 10*time.Second, "benchpeer listening", dialable(mqttAddr)); err != nil {
		p.stop()
		return nil, err
	}
	return pr, nil
}

// received returns the count of the peer's subscriber.
func (p *peer) received(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.http+"/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s struct {
		Received int64 `json:"received"`
	}
	return s.Received, json.NewDecoder(resp.Body).Decode(&s)
}

// startMosquitto starts Debian's mosquitto on a free loopback port with a
// configuration for a benchmark: anonymous clients, no persistence, and
// queues deep enough that a busy subscriber (Telegraf) is not cut off.
func (r *runner) startMosquitto(ctx context.Context) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	conf := fmt.Sprintf(`# written by the benchmark suite
listener %s 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_inflight_messages 1000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port)
	path := filepath.Join(r.cfg.Dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc(r.cfg.Dir, "mosquitto", nil, r.cfg.Mosquitto, "-c", path)
	if err != nil {
		return nil, "", err
	}
	if err := waitFor(ctx, p, 10*time.Second, "mosquitto listening", dialable(addr)); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

// startTelegraf starts Telegraf's mqtt_consumer on the broker at addr,
// subscribed at qos, writing to dbTelegraf (configs/telegraf-bench.conf).
func (r *runner) startTelegraf(ctx context.Context, brokerAddr string, qos byte) (*proc, error) {
	env := []string{"BENCH_MQTT_URL=tcp://" + brokerAddr, fmt.Sprintf("BENCH_QOS=%d", qos),
		"BENCH_INFLUX_URL=" + r.cfg.InfluxURL, "BENCH_BUCKET=" + dbTelegraf}
	p, err := startProc(r.cfg.Dir, fmt.Sprintf("telegraf-qos%d", qos), env, r.cfg.Telegraf, "--config", r.cfg.TelegrafConfig)
	if err != nil {
		return nil, err
	}
	return p, nil
}
