// Command loadgen drives MQTT load at a broker for benchmarks, and runs the
// benchmark suite behind `make bench`.
//
//	loadgen publish  -mqtt 127.0.0.1:1883 -api http://127.0.0.1:8080 -token-file data/admin.token -devices 1000 -rate 20000 -duration 10s -qos 1
//	loadgen idle     -mqtt 127.0.0.1:1883 -api ... -devices 10000 -hold 30s
//	loadgen watch    -live ws://127.0.0.1:8080/api/v1/live?kinds=reading -token-file ... -clients 10 -duration 10s
//	loadgen bench    -mode quick -out BENCHMARKS.md ... (see scripts/bench.sh)
//
// Without -api the devices connect without passwords, for brokers that admit
// anyone (the bare-broker peers).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/telehub/telehub/cmd/loadgen/bench"
	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/devices/topics"
)

const usage = `usage: loadgen publish|idle|watch|bench [flags]   (loadgen CMD -h for flags)`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	switch os.Args[1] {
	case "publish", "idle":
		err = runFleet(ctx, os.Args[1], os.Args[2:])
	case "watch":
		err = runWatch(ctx, os.Args[2:])
	case "bench":
		err = bench.Main(ctx, os.Args[2:], logger)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type fleetFlags struct {
	mqtt, api, token, tokenFile, prefix string
	devices, sourceIPs                  int
	keepAlive                           time.Duration
}

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mqtt, "mqtt", "127.0.0.1:1883", "broker address")
	fs.StringVar(&f.api, "api", "", "Telehub API base URL to provision the devices through; empty: connect without passwords")
	fs.StringVar(&f.token, "token", "", "admin token (or -token-file)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the admin token")
	fs.StringVar(&f.prefix, "prefix", "bench", "device ID prefix")
	fs.IntVar(&f.devices, "devices", 1000, "devices, one connection each")
	fs.IntVar(&f.sourceIPs, "source-ips", 8, "spread connections over this many 127.0.0.x source addresses")
	fs.DurationVar(&f.keepAlive, "keepalive", 60*time.Second, "MQTT keep-alive")
}

func (f *fleetFlags) adminToken() (string, error) {
	if f.token != "" || f.tokenFile == "" {
		return f.token, nil
	}
	b, err := os.ReadFile(f.tokenFile)
	return strings.TrimSpace(string(b)), err
}

func (f *fleetFlags) connect(ctx context.Context) (*load.Fleet, error) {
	ids := load.DeviceIDs(f.prefix, f.devices)
	devs := make([]load.Device, len(ids))
	for i, id := range ids {
		devs[i] = load.Device{ID: id}
	}
	if f.api != "" {
		tok, err := f.adminToken()
		if err != nil {
			return nil, err
		}
		if devs, err = load.Provision(ctx, f.api, tok, ids, "thermostat"); err != nil {
			return nil, err
		}
	}
	fl, res, err := load.Connect(ctx, load.FleetConfig{Addr: f.mqtt, Devices: devs, SourceIPs: f.sourceIPs, KeepAlive: f.keepAlive})
	fmt.Fprintf(os.Stderr, "connected %d, failed %d in %v %s\n", res.Connected, res.Failed, res.Elapsed.Round(time.Millisecond), res.FirstErr)
	return fl, err
}

func runFleet(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var ff fleetFlags
	ff.register(fs)
	rate := fs.Float64("rate", 10000, "offered readings per second, over the fleet")
	dur := fs.Duration("duration", 10*time.Second, "how long to publish, or (idle) to hold the connections")
	qos := fs.Uint("qos", 1, "QoS 0 or 1")
	workers := fs.Int("workers", 4, "sending goroutines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fl, err := ff.connect(ctx)
	if err != nil {
		return err
	}
	defer fl.Close()
	if cmd == "idle" {
		select {
		case <-ctx.Done():
		case <-time.After(*dur):
		}
		fmt.Fprintf(os.Stderr, "dropped %d\n", fl.Dropped())
		return nil
	}
	res, err := fl.Publish(ctx, load.PublishConfig{Rate: *rate, Duration: *dur, QoS: byte(*qos), Workers: *workers})
	fmt.Fprintf(os.Stderr, "sent %d (%.0f/s) errors %d acked %d unacked %d\n  ack:  %v\n  late: %v\n",
		res.Sent, res.SendRate(), res.Errors, res.Acked, res.Unacked, res.Ack, res.Late)
	return errors.Join(err, json.NewEncoder(os.Stdout).Encode(res))
}

func runWatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	live := fs.String("live", "", "live stream URL (ws://host/api/v1/live?kinds=reading); empty: MQTT subscribers on -mqtt")
	mqttAddr := fs.String("mqtt", "127.0.0.1:1883", "broker address for MQTT subscribers")
	filter := fs.String("filter", topics.TelemetryFilter, "MQTT subscription")
	token := fs.String("token", "", "API token for the live stream")
	tokenFile := fs.String("token-file", "", "file holding the API token")
	clients := fs.Int("clients", 10, "watchers")
	dur := fs.Duration("duration", 10*time.Second, "how long to watch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ws *load.Watchers
	var err error
	if *live != "" {
		tok := *token
		if tok == "" && *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return err
			}
			tok = strings.TrimSpace(string(b))
		}
		ws, err = load.Dashboards(ctx, *live, tok, *clients)
	} else {
		ws, err = load.Subscribe(ctx, *mqttAddr, *clients, *filter, "", "")
	}
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(*dur):
	}
	ws.Close()
	r := ws.Result()
	fmt.Fprintf(os.Stderr, "readings %d gaps %d latency %v\n", r.Readings, r.Gaps, r.Latency)
	return json.NewEncoder(os.Stdout).Encode(r)
}
