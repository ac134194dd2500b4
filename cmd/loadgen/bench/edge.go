package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// EdgeRow is scenario 6 for one build: the hub with the Raspberry Pi
// profile, idle and with devices publishing.
type EdgeRow struct {
	// System names the build: "linux/amd64" or "linux/arm64 under qemu".
	System string
	// Emulated is set for the build run under qemu-aarch64-static, whose
	// RSS includes the emulator's own memory.
	Emulated bool
	// IdleKB is the RSS after start-up and settling, nothing connected.
	IdleKB int64
	// Devices is how many devices published, each at Rate readings/s.
	Devices int
	Rate    float64
	// LoadKB is the RSS at the end of the run, PeakKB the highest sampled
	// during it, both in KiB.
	LoadKB, PeakKB int64
	// Sent and Acked count the readings of the run (QoS 1).
	Sent, Acked int64
	Err         string
}

// piGOMEMLIMIT returns the GOMEMLIMIT the systemd unit sets
// (Environment=GOMEMLIMIT=...), or "" when it sets none.
func piGOMEMLIMIT(unit string) string {
	f, err := os.Open(unit)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Environment=GOMEMLIMIT="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// piConfig returns the Pi profile (configs/telehub.pi.yaml) with the data
// directory and listen addresses of this run, warnings-only logging, and
// the connect rate limit lifted so that the devices connect at once; every
// other key is the profile's.
func piConfig(profile, dataDir, mqttAddr, httpAddr string) ([]byte, error) {
	b, err := os.ReadFile(profile)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", profile, err)
	}
	section := func(k string) map[string]any {
		s, ok := m[k].(map[string]any)
		if !ok {
			s = map[string]any{}
			m[k] = s
		}
		return s
	}
	m["data_dir"], m["log_level"] = dataDir, "warn"
	mq := section("mqtt")
	mq["addr"], mq["connect_rate"] = mqttAddr, 0
	delete(mq, "connect_burst")
	section("http")["addr"] = httpAddr
	return yaml.Marshal(m)
}

// startEdgeHub starts bin (under the emulator when emu is set) with the Pi
// profile and the unit's GOMEMLIMIT.
func (r *runner) startEdgeHub(ctx context.Context, name, emu, bin string) (*telehub, error) {
	var env []string
	if lim := piGOMEMLIMIT(r.cfg.PiUnit); lim != "" {
		env = append(env, "GOMEMLIMIT="+lim)
	}
	return r.launchTelehub(ctx, name, emu, bin, env, 60*time.Second, func(dataDir, mqttAddr, httpAddr string) ([]byte, error) {
		return piConfig(r.cfg.PiConfig, dataDir, mqttAddr, httpAddr)
	})
}

// buildArm64 returns the linux/arm64 telehub: the one given, or one built
// from the module in the working directory the way `make release` builds
// it (static, CGO_ENABLED=0).
func (r *runner) buildArm64(ctx context.Context) (string, error) {
	if r.cfg.TelehubArm64 != "" {
		return filepath.Abs(r.cfg.TelehubArm64)
	}
	out := filepath.Join(r.cfg.Dir, "telehub-linux-arm64")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/telehub")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build linux/arm64 telehub: %v: %s", err, b)
	}
	return out, nil
}

// edgeRun measures one build: idle RSS after settling, then the RSS while
// n devices publish one reading a second each for d.
func (r *runner) edgeRun(ctx context.Context, row EdgeRow, emu, bin string, n int, d time.Duration) EdgeRow {
	name := "edge-amd64"
	if row.Emulated {
		name = "edge-arm64"
	}
	h, err := r.startEdgeHub(ctx, name, emu, bin)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	defer h.stop()
	r.settle(ctx)
	row.IdleKB = rssKB(h.pid())
	if n == 0 {
		return row
	}
	devs, err := load.Provision(ctx, h.http, h.token, load.DeviceIDs("edge", n), "thermostat")
	if err != nil {
		row.Err = "provision: " + err.Error()
		return row
	}
	f, res, err := load.Connect(ctx, load.FleetConfig{Addr: h.mqtt, Devices: devs, SourceIPs: 4, KeepAlive: 60 * time.Second, Concurrency: 16})
	if err != nil {
		row.Err = "connect: " + err.Error()
		return row
	}
	defer f.Close()
	row.Devices, row.Rate = res.Connected, float64(res.Connected)
	// Sample the RSS while the devices publish; the last sample is the
	// settled figure, the highest the peak.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			kb := rssKB(h.pid())
			row.PeakKB = max(row.PeakKB, kb)
			row.LoadKB = kb
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	})
	pr, err := f.Publish(ctx, load.PublishConfig{Rate: row.Rate, Duration: d, QoS: 1, Workers: 2, Drain: 30 * time.Second,
		AfterSend: func() { stop() }})
	stop()
	wg.Wait()
	row.Sent, row.Acked = pr.Sent, pr.Acked
	if err != nil {
		row.Err = "publish: " + err.Error()
	} else if pr.Unacked > 0 || pr.Errors > 0 {
		row.Err = fmt.Sprintf("%d readings unacknowledged, %d send errors", pr.Unacked, pr.Errors)
	}
	if f.Dropped() > 0 {
		row.Err = strings.TrimPrefix(row.Err+fmt.Sprintf("; %d connections dropped", f.Dropped()), "; ")
	}
	r.log.Info("edge memory", "system", row.System, "idle_kb", row.IdleKB, "devices", row.Devices,
		"load_kb", row.LoadKB, "peak_kb", row.PeakKB, "sent", row.Sent, "acked", row.Acked, "err", row.Err)
	return row
}

// edge is scenario 6: the resident memory of the hub as a Raspberry Pi
// runs it (configs/telehub.pi.yaml, the unit's GOMEMLIMIT, the embedded
// store): the amd64 build idle and with 1,000 devices at one reading a
// second each, then the arm64 build under qemu user emulation as a smoke
// figure, idle and with a tenth of the devices.
func (r *runner) edge(ctx context.Context) error {
	amd64 := r.cfg.Telehub
	if runtime.GOARCH != "amd64" {
		r.rep.Notes = append(r.rep.Notes, "Scenario 6 ran the native "+runtime.GOARCH+" build in the amd64 row.")
	}
	row := r.edgeRun(ctx, EdgeRow{System: "linux/" + runtime.GOARCH}, "", amd64, r.plan.edgeDevices, r.plan.edgeDur)
	r.rep.Edge = append(r.rep.Edge, row)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	emu, err := exec.LookPath(r.cfg.Qemu)
	if err != nil {
		r.rep.Edge = append(r.rep.Edge, EdgeRow{System: "linux/arm64 under qemu", Emulated: true, Err: "no " + r.cfg.Qemu + " (Debian qemu-user-static)"})
		return nil
	}
	bin, err := r.buildArm64(ctx)
	if err != nil {
		r.rep.Edge = append(r.rep.Edge, EdgeRow{System: "linux/arm64 under qemu", Emulated: true, Err: err.Error()})
		return nil
	}
	r.rep.Edge = append(r.rep.Edge, r.edgeRun(ctx, EdgeRow{System: "linux/arm64 under qemu", Emulated: true}, emu, bin,
		r.plan.edgeDevices/10, r.plan.edgeDur))
	return nil
}

// edgeMarkdown writes scenario 6.
func (r *Report) edgeMarkdown(w func(string, ...any)) {
	if len(r.Edge) == 0 {
		return
	}
	w("### 6. Edge memory (Raspberry Pi profile)\n\n" +
		"The hub as `configs/telehub.service` runs it on a Pi: `configs/telehub.pi.yaml` (embedded store, batched fsync, bounded buffers) " +
		"and the unit's GOMEMLIMIT, with only the addresses, the data directory and the connect rate limit changed. " +
		"Resident memory (VmRSS) after start-up and settling, then while every device publishes one reading a second at QoS 1 " +
		"(at the end of the run, and the highest sampled every 250 ms). The arm64 build runs under `qemu-aarch64-static` " +
		"user emulation: its RSS is the emulator's process and includes qemu's own memory and translated code, so it is a smoke figure " +
		"(the build starts, takes devices and stays bounded), not the memory it takes on a Pi.\n\n")
	w("| build | idle RSS | devices | readings/s | RSS under load | peak | sent | acknowledged | |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, e := range r.Edge {
		ld, peak, rate := "", "", ""
		if e.Devices > 0 {
			ld, peak, rate = mb(e.LoadKB), mb(e.PeakKB), num(e.Rate)
		}
		idle := ""
		if e.IdleKB > 0 {
			idle = mb(e.IdleKB)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", e.System, idle, num(float64(e.Devices)), rate, ld, peak,
			num(float64(e.Sent)), num(float64(e.Acked)), e.Err)
	}
	w("\n")
}

// edgeTargets writes the edge rows of the targets table.
func (r *Report) edgeTargets(w func(string, ...any)) {
	for _, e := range r.Edge {
		if e.Emulated {
			continue
		}
		if e.IdleKB > 0 {
			w("| edge (Pi profile, %s) idle < 30 MB resident | %s | %s |\n", e.System, mb(e.IdleKB), yes(e.IdleKB < 30*1024))
		}
		if e.Devices > 0 {
			ok := e.Err == "" && e.Devices >= 1000 && e.PeakKB < 80*1024
			w("| edge (Pi profile, %s) %s devices at 1 reading/s < 80 MB resident | %s (peak %s) | %s |\n", e.System,
				num(float64(e.Devices)), mb(e.LoadKB), mb(e.PeakKB), yes(ok))
		}
	}
}
