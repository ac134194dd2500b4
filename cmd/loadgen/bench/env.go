package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Machine describes where the run happened.
type Machine struct {
	CPU, Kernel, Memory string
	Cores               int
	FDLimit             uint64
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), FDLimit: fdLimit()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.Memory = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// versions returns name/version pairs of everything measured.
func versions(ctx context.Context, c Config) [][2]string {
	run := func(bin string, args ...string) string {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(line)
	}
	vs := [][2]string{
		{"telehub", run(c.Telehub, "version")},
		{"go", runtime.Version()},
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/mochi-mqtt/server/v2" {
				vs = append(vs, [2]string{"mochi-mqtt (in telehub and benchpeer)", d.Version})
			}
		}
	}
	// Telegraf and influxd built with go install do not know their own
	// version; their build information does.
	module := func(bin string) string {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
		for line := range strings.SplitSeq(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" {
				return f[1] + " " + f[2]
			}
		}
		return run(bin, "--version")
	}
	vs = append(vs, [2]string{"mosquitto (Debian)", run(c.Mosquitto, "-h")})
	if c.Telegraf != "" {
		vs = append(vs, [2]string{"telegraf", module(c.Telegraf)})
	}
	if c.Influxd != "" {
		vs = append(vs, [2]string{"influxd", module(c.Influxd)})
	}
	return vs
}
