// Package bench runs the benchmark suite of `make bench`: Telehub and its
// peers (bare mochi-mqtt, Mosquitto with Telegraf, direct writes to
// InfluxDB) started side by side on this machine, the same load offered to
// each by cmd/loadgen/load, and every figure written to BENCHMARKS.md.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/load"
)

// Config is what a run needs: the mode, where things are, what to run.
type Config struct {
	// Mode is "quick" (a few minutes, for development) or "full" (for the
	// record: longer steps, finer rate steps, 50,000 connections).
	Mode string
	// Out is the BENCHMARKS.md to write.
	Out string
	// Dir is a scratch directory for data, configurations and logs.
	Dir string
	// Binaries of the systems under test.
	Telehub, Benchpeer, Mosquitto, Telegraf string
	// TelegrafConfig is configs/telegraf-bench.conf.
	TelegrafConfig string
	// InfluxURL is the influxd every writer shares; Influxd its binary
	// (for its version).
	InfluxURL, Influxd string
	// Scenarios to run (default all): memory, ingest, live, fanout, idle,
	// edge, rules, floods.
	Scenarios []string
	// Systems limits the ingest scenario to some of telehub, telegraf,
	// direct and mochi (default all), for experiments.
	Systems []string
	// TelehubYAML is appended to every hub's configuration, for experiments
	// (e.g. "writer:\n  batch_size: 20000"); the report says so.
	TelehubYAML string
	// PiConfig and PiUnit are configs/telehub.pi.yaml and
	// configs/telehub.service, the edge scenario's profile and GOMEMLIMIT.
	PiConfig, PiUnit string
	// Qemu runs the arm64 build in the edge scenario; TelehubArm64 is that
	// build (empty: built from the working directory).
	Qemu, TelehubArm64 string
	// TelehubPprof is the floods scenario's hub: bin/telehub's source
	// built with -tags pprof (empty: built from the working directory).
	TelehubPprof string
	// EdgeDuration, when set, replaces the mode's publishing time of the
	// edge scenario (a soak); the report says so.
	EdgeDuration time.Duration
}

// Scenarios names every scenario in the order they run.
var Scenarios = []string{"memory", "ingest", "live", "fanout", "idle", "edge", "rules", "floods"}

// withoutInflux are the scenarios that need neither influxd nor Telegraf.
var withoutInflux = []string{"edge", "floods"}

// plan is the size of each scenario in a mode.
type plan struct {
	ingestDevices  int
	ingestRates    []float64
	stepDur        time.Duration
	drainMax       time.Duration // longest wait for the store to catch up
	drainOK        time.Duration // a step passes only if the store caught up within this
	maxP99         time.Duration // a step passes only if acks and sends stay within this
	liveRates      []float64
	liveDashboards int
	liveDur        time.Duration
	fanoutClients  []int
	fanoutRate     float64
	fanoutDur      time.Duration
	idleConns      int
	settle         time.Duration
	edgeDevices    int           // devices of the edge scenario, 1 reading/s each
	edgeDur        time.Duration // how long they publish
	rulesDevices   int           // devices of the rules scenario
	rulesRate      float64       // readings/s they send
	rulesDur       time.Duration // measured per run
	rulesRuns      int           // runs of each rule count
}

func planFor(mode string) (plan, error) {
	p := plan{ingestDevices: 1000, drainOK: 5 * time.Second, maxP99: time.Second,
		liveRates: []float64{1000, 10000}, liveDashboards: 10, fanoutClients: []int{10, 100, 1000}, fanoutRate: 100,
		edgeDevices: 1000, edgeDur: 15 * time.Second,
		rulesDevices: 1000, rulesRate: 20000, rulesDur: 8 * time.Second, rulesRuns: 2}
	switch mode {
	case "quick":
		p.ingestRates = []float64{5000, 10000, 20000, 40000, 60000, 80000, 100000, 120000}
		p.stepDur, p.drainMax, p.liveDur, p.fanoutDur = 4*time.Second, 15*time.Second, 5*time.Second, 5*time.Second
		p.idleConns, p.settle = 5000, 5*time.Second
	case "full":
		p.ingestDevices = 2000
		p.ingestRates = []float64{5000, 10000, 15000, 20000, 25000, 30000, 40000, 50000, 60000, 80000, 100000, 120000, 150000}
		p.stepDur, p.drainMax, p.liveDur, p.fanoutDur = 15*time.Second, 30*time.Second, 20*time.Second, 15*time.Second
		p.idleConns, p.settle = 50000, 10*time.Second
		p.edgeDur = 60 * time.Second
		p.rulesRuns = 4
	default:
		return p, fmt.Errorf("mode %q: use quick or full", mode)
	}
	return p, nil
}

// Main parses the command line of `loadgen bench` and runs the suite.
func Main(ctx context.Context, args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var c Config
	var only, systems string
	fs.StringVar(&c.Mode, "mode", "quick", "quick or full")
	fs.StringVar(&c.Out, "out", "BENCHMARKS.md", "report to write")
	fs.StringVar(&c.Dir, "dir", "", "scratch directory (default: a new temporary one)")
	fs.StringVar(&c.Telehub, "telehub", "bin/telehub", "telehub binary")
	fs.StringVar(&c.Benchpeer, "benchpeer", "bin/benchpeer", "benchpeer binary")
	fs.StringVar(&c.Mosquitto, "mosquitto", "/usr/sbin/mosquitto", "mosquitto binary")
	fs.StringVar(&c.Telegraf, "telegraf", "", "telegraf binary")
	fs.StringVar(&c.TelegrafConfig, "telegraf-config", "configs/telegraf-bench.conf", "telegraf configuration")
	fs.StringVar(&c.InfluxURL, "influx-url", "", "influxd base URL")
	fs.StringVar(&c.Influxd, "influxd", "", "influxd binary, for its version")
	fs.StringVar(&c.TelehubYAML, "telehub-yaml", "", "YAML appended to every hub's configuration, for experiments (recorded in the report)")
	fs.StringVar(&c.PiConfig, "pi-config", "configs/telehub.pi.yaml", "the Raspberry Pi profile (edge scenario)")
	fs.StringVar(&c.PiUnit, "pi-unit", "configs/telehub.service", "the systemd unit whose GOMEMLIMIT the edge scenario uses")
	fs.StringVar(&c.Qemu, "qemu", "qemu-aarch64-static", "qemu user emulator for the arm64 build (edge scenario)")
	fs.StringVar(&c.TelehubArm64, "telehub-arm64", "", "linux/arm64 telehub binary (default: built with go build)")
	fs.StringVar(&c.TelehubPprof, "telehub-pprof", "", "telehub built with -tags pprof (floods scenario; default: built with go build)")
	fs.StringVar(&systems, "systems", "", "comma-separated systems of the ingest scenario: telehub,telegraf,direct,mochi (default all)")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run: "+strings.Join(Scenarios, ","))
	fs.DurationVar(&c.EdgeDuration, "edge-duration", 0, "how long the edge scenario's devices publish, for a soak (default: the mode's, 15s or 60s)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if only != "" {
		c.Scenarios = strings.Split(only, ",")
	}
	if systems != "" {
		c.Systems = strings.Split(systems, ",")
	}
	return Run(ctx, c, logger)
}

// Run runs the suite and writes the report.
func Run(ctx context.Context, c Config, logger *slog.Logger) error {
	p, err := planFor(c.Mode)
	if err != nil {
		return err
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	needInflux := slices.ContainsFunc(c.Scenarios, func(s string) bool { return !slices.Contains(withoutInflux, s) })
	if needInflux && (c.InfluxURL == "" || c.Telegraf == "") {
		return errors.New("bench: -influx-url and -telegraf are required (scripts/bench.sh sets them; only " +
			strings.Join(withoutInflux, " and ") + " run without)")
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "telehub-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(c.Dir)
	} else if err := os.MkdirAll(c.Dir, 0o750); err != nil {
		return err
	}
	for _, b := range []*string{&c.Telehub, &c.Benchpeer, &c.Mosquitto, &c.Telegraf, &c.TelegrafConfig, &c.PiConfig, &c.PiUnit} {
		if *b == "" { // not needed by the scenarios chosen
			continue
		}
		if *b, err = filepath.Abs(*b); err != nil {
			return err
		}
	}
	if c.EdgeDuration > 0 {
		p.edgeDur = c.EdgeDuration
	}
	r := &runner{cfg: c, plan: p, log: logger, rep: &Report{Mode: c.Mode, Start: time.Now()}}
	r.rep.Machine = machine()
	if c.EdgeDuration > 0 {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("The edge scenario's devices published for %v (-edge-duration).", c.EdgeDuration))
	}
	if c.TelehubYAML != "" {
		r.rep.Notes = append(r.rep.Notes, "Telehub ran with this added to its configuration: `"+strings.ReplaceAll(c.TelehubYAML, "\n", " ")+"`")
	}
	r.rep.Versions = versions(ctx, c)
	for _, db := range []string{dbTelehub, dbTelegraf, dbDirect} {
		if needInflux {
			load.InfluxQL(ctx, c.InfluxURL, "", "DROP DATABASE "+db)
			if err := load.InfluxQL(ctx, c.InfluxURL, "", "CREATE DATABASE "+db); err != nil {
				return err
			}
		}
	}
	steps := map[string]func(context.Context) error{
		"memory": r.memory, "ingest": r.ingest, "live": r.live, "fanout": r.fanout, "idle": r.idle,
		"edge":   r.edge,
		"rules":  r.rulesScenario,
		"floods": r.floods,
	}
	for _, s := range Scenarios {
		if !slices.Contains(c.Scenarios, s) {
			continue
		}
		logger.Info("scenario", "name", s, "load", loadAvg())
		r.rep.Loads = append(r.rep.Loads, s+": "+loadAvg())
		if err := steps[s](ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			logger.Error("scenario failed", "name", s, "err", err)
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("Scenario %s did not complete: %v", s, err))
		}
	}
	r.rep.End = time.Now()
	r.rep.Loads = append(r.rep.Loads, "end: "+loadAvg())
	return writeReport(c.Out, r.rep)
}

// runs reports whether the ingest scenario includes a system.
func (c Config) runs(system string) bool {
	return len(c.Systems) == 0 || slices.Contains(c.Systems, system)
}

// runner carries a run's state.
type runner struct {
	cfg  Config
	plan plan
	log  *slog.Logger
	rep  *Report
}
