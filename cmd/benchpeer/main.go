// Command benchpeer is the bare-broker peer of `make bench`: mochi-mqtt with
// every client allowed and an in-process subscriber counting telemetry on
// devices/+/telemetry, with the count at GET /stats.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/telehub/telehub/cmd/loadgen/bench"
)

func main() {
	mqttAddr := flag.String("mqtt", "127.0.0.1:1884", "MQTT listen address")
	httpAddr := flag.String("http", "127.0.0.1:8084", "statistics listen address")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := bench.StartPeer(*mqttAddr, *httpAddr, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchpeer:", err)
		os.Exit(1)
	}
	<-ctx.Done()
	p.Stop()
}
