// Command telehub is the IoT telemetry and control hub: `telehub serve` runs
// the embedded MQTT broker, the ingest pipeline and the HTTP API, and exits
// non-zero when its stop failed (a lost final flush); `telehub device`,
// `token`, `integration` and `command` manage a running hub over its API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/telehub/telehub/cmd/telehub/app"
	"github.com/telehub/telehub/cmd/telehub/cli"
	"github.com/telehub/telehub/cmd/telehub/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: telehub <command> [flags]

commands:
  serve        run the hub (telehub serve -h for its flags)
  device       manage devices of a running hub: add, list, show, rm, token
  token        manage API tokens of a running hub: create, list, rm
  integration  manage MQTT credentials of other clients: add, list, show, rm
  command      send commands to devices and follow them: send, show, list
  version      print the version

Commands that talk to a running hub take --url (env TELEHUB_URL, default
http://localhost:8080), --token (env TELEHUB_TOKEN) or --token-file
(default ./data/admin.token), and --json.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(os.Args[2:]))
	case "device":
		os.Exit(runCLI(cli.Device, os.Args[2:]))
	case "token":
		os.Exit(runCLI(cli.Token, os.Args[2:]))
	case "integration":
		os.Exit(runCLI(cli.Integration, os.Args[2:]))
	case "command":
		os.Exit(runCLI(cli.Command, os.Args[2:]))
	case "version":
		v := version
		if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		fmt.Println("telehub", v)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "telehub: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// runCLI runs a client command against a running hub.
func runCLI(cmd func(context.Context, []string, cli.Env) error, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd(ctx, args, cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintln(os.Stderr, "telehub:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "telehub:", err)
		return 1
	}
}

func serve(args []string) int {
	cfg, err := config.Load("telehub serve", args, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "telehub:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, d := range cfg.Deprecations {
		logger.Warn("deprecated setting: it works for this release only", "old", d.Old, "new", d.New)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("telehub failed", "err", err)
		return 1
	}
	return 0
}
