// Command fleetsim runs a simulated fleet of Telehub devices: it provisions
// thermostats and wearables through the hub's HTTP API, then publishes their
// telemetry over MQTT until stopped, printing progress to stderr and a
// summary at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
)

// progressEvery is the interval of the progress line on stderr.
const progressEvery = 2 * time.Second

// Exit codes.
const (
	exitOK           = 0
	exitRunFailed    = 1 // provisioning failed entirely, or the run failed
	exitBadArguments = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg := firmwaresim.DefaultConfig()
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.HubURL, "hub", cfg.HubURL, "hub HTTP API base `URL`")
	fs.StringVar(&cfg.MQTTURL, "mqtt", cfg.MQTTURL, "MQTT broker `URL`")
	token := fs.String("token", "", "admin API `token` (default $TELEHUB_TOKEN, then the token file)")
	tokenFile := fs.String("token-file", "./data/admin.token", "`file` holding the admin API token")
	fs.IntVar(&cfg.Thermostats, "thermostats", cfg.Thermostats, "number of simulated thermostats")
	fs.IntVar(&cfg.Wearables, "wearables", cfg.Wearables, "number of simulated wearables")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time between two readings of one device")
	qos := fs.Uint("qos", uint(cfg.QoS), "MQTT QoS of telemetry: 0, 1 or 2")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish; 0 runs until interrupted")
	fs.StringVar(&cfg.IDPrefix, "prefix", cfg.IDPrefix, "device ID `prefix`")
	seed := fs.Int64("seed", 0, "random seed of the readings; 0 picks one from the clock")
	asJSON := fs.Bool("json", false, "print the final summary as JSON on stdout")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	hw := addHardwareFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadArguments
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *qos > 2 {
		log.Error("invalid --qos", "qos", *qos)
		return exitBadArguments
	}
	cfg.QoS = byte(*qos)
	cfg.Seed = *seed
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	var err error
	if cfg.Token, err = adminToken(*token, os.Getenv("TELEHUB_TOKEN"), *tokenFile); err != nil {
		log.Error("no admin token", "err", err)
		return exitBadArguments
	}
	if hw.on {
		prefixSet := false
		fs.Visit(func(f *flag.Flag) { prefixSet = prefixSet || f.Name == "prefix" })
		closeHW, err := hw.apply(&cfg, prefixSet, log)
		if err != nil {
			log.Error("hardware", "err", err)
			return exitRunFailed
		}
		defer closeHW()
	}
	fleet, err := firmwaresim.New(cfg, log)
	if err != nil {
		log.Error("bad configuration", "err", err)
		return exitBadArguments
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second interrupt kills at once
	log.Info("fleetsim starting", "hub", cfg.HubURL, "mqtt", cfg.MQTTURL,
		"thermostats", cfg.Thermostats, "wearables", cfg.Wearables, "seed", cfg.Seed)

	progressCtx, stopProgress := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { fleet.ReportProgress(progressCtx, stderr, progressEvery) })
	runErr := fleet.Run(ctx)
	stopProgress()
	wg.Wait()

	if err := printSummary(stdout, fleet.Stats(), *asJSON); err != nil {
		log.Error("print summary", "err", err)
	}
	if runErr != nil {
		log.Error("fleet failed", "err", runErr)
		return exitRunFailed
	}
	return exitOK
}

// adminToken picks the admin token: the flag, else the environment, else the file.
func adminToken(flagValue, envValue, file string) (string, error) {
	if t := strings.TrimSpace(flagValue); t != "" {
		return t, nil
	}
	if t := strings.TrimSpace(envValue); t != "" {
		return t, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("pass --token, set TELEHUB_TOKEN or point --token-file at the hub's admin.token: %w", err)
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return t, nil
}

func printSummary(w io.Writer, st firmwaresim.Stats, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	return st.WriteText(w)
}
