package rules

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// benchDevices is the fleet of the benchmarks: thermostats and wearables
// over ten rooms and three floors.
const benchDevices = 1000

var benchFields = []string{"temperature", "humidity", "setpoint", "rssi", "battery", "heart_rate"}

func benchDevice(i int) devices.Device {
	typ := "thermostat"
	if i%2 == 1 {
		typ = "wearable"
	}
	return devices.Device{ID: "dev-" + strconv.Itoa(i), Type: typ,
		Labels: map[string]string{"room": "room-" + strconv.Itoa(i%10), "floor": strconv.Itoa(i % 3)}}
}

// benchRule returns the i-th rule of a realistic mix: 60% thresholds, 20%
// rates, 10% absence, 10% offline; scoped 40% to one device, 30% to a type,
// 20% by labels, 10% by type and labels; none fires on the steady readings
// of the benchmark, as in a healthy fleet.
func benchRule(i int) Spec {
	s := Spec{ID: "r" + strconv.Itoa(i), Name: "rule " + strconv.Itoa(i)}
	switch i % 10 {
	case 0, 1, 2, 3:
		s.Scope.Device = benchDevice(i * 7 % benchDevices).ID
	case 4, 5, 6:
		s.Scope.Type = []string{"thermostat", "wearable"}[i%2]
	case 7, 8:
		s.Scope.Labels = "room=room-" + strconv.Itoa(i%10)
	default:
		s.Scope.Type, s.Scope.Labels = "thermostat", "floor in (1,2)"
	}
	field := benchFields[i%len(benchFields)]
	switch i % 10 {
	case 0, 2, 4, 5, 7, 9:
		s.Condition = Condition{Kind: KindThreshold, Field: field, Op: ">", Value: 1000.0 + float64(i), For: "5m", ClearBelow: ptr(900.0)}
	case 1, 6:
		s.Condition = Condition{Kind: KindRate, Field: field, Op: ">", Value: 50.0, Window: "5m"}
	case 3:
		s.Condition = Condition{Kind: KindAbsence, Field: field, For: "1h"}
	default:
		s.Condition = Condition{Kind: KindOffline, For: "1h"}
	}
	return s
}

// benchEngine is an engine with n rules over the benchmark fleet.
func benchEngine(b *testing.B, rules []Spec) (*Engine, *live.Hub) {
	dir := b.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{NoSync: true})
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	reg, err := devices.New(db)
	require.NoError(b, err)
	for i := range benchDevices {
		_, _, err := reg.Create(benchDevice(i))
		require.NoError(b, err)
	}
	hub := live.New(1 << 16)
	e, err := New(DefaultConfig(), rules, Deps{DB: db, Devices: reg, Presence: allOnline{}, Live: hub, Metrics: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(b, err)
	e.Start(context.Background())
	b.Cleanup(e.Stop)
	return e, hub
}

// allOnline is the presence of a healthy fleet: every device is connected
// (the devices of the benchmarks publish all the time).
type allOnline struct{}

func (allOnline) Online(string) bool { return true }

func benchSpecs(n int) []Spec {
	out := make([]Spec, n)
	for i := range out {
		out[i] = benchRule(i)
	}
	return out
}

// benchThresholds is the same mix of scopes and fields with every rule a
// threshold (with for and hysteresis), none crossed.
func benchThresholds(n int) []Spec {
	out := benchSpecs(n)
	for i := range out {
		field := benchFields[i%len(benchFields)]
		out[i].Condition = Condition{Kind: KindThreshold, Field: field, Op: ">", Value: 1000.0 + float64(i), For: "5m", ClearBelow: ptr(900.0)}
		if i%2 == 1 {
			out[i].Condition = Condition{Kind: KindThreshold, Field: field, Op: "<", Value: -1000.0 - float64(i), For: "5m"}
		}
	}
	return out
}

// benchPayload is a thermostat's or wearable's reading.
func benchPayload(i int) []byte {
	if i%2 == 0 {
		return []byte(`{"temperature":21.5,"humidity":40,"setpoint":21,"heating":true,"rssi":-60,"battery":88}`)
	}
	return []byte(`{"heart_rate":72,"steps":1200,"battery":64,"rssi":-70}`)
}

// BenchmarkObserve measures the engine alone: one payload of 4-6 fields of
// one device per op, from parallel publishers, over a realistic mix of
// rules, and over 1,000 rules that all watch the same field of the same
// device type (the worst case the index cannot help with).
func BenchmarkObserve(b *testing.B) {
	cases := []struct {
		name  string
		specs []Spec
	}{
		{"rules=0", nil},
		{"rules=100", benchSpecs(100)},
		{"rules=1000", benchSpecs(1000)},
		{"rules=1000-same-field", func() []Spec {
			out := make([]Spec, 1000)
			for i := range out {
				out[i] = Spec{ID: "s" + strconv.Itoa(i), Name: "s", Scope: Scope{Type: "thermostat"},
					Condition: Condition{Kind: KindThreshold, Field: "temperature", Op: ">", Value: 100.0 + float64(i)}}
			}
			return out
		}()},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			e, _ := benchEngine(b, tc.specs)
			pts := make([][]ingest.Point, benchDevices)
			devs := make([]ingest.Device, benchDevices)
			for i := range pts {
				p, err := ingest.Decode(benchPayload(i), ingest.FormatAuto, time.Now(), ingest.DefaultLimits())
				require.NoError(b, err)
				pts[i] = p
				d := benchDevice(i)
				devs[i] = ingest.Device{ID: d.ID, Type: d.Type}
			}
			for i := range devs { // build the per-device rule caches
				e.Observe(devs[i], pts[i])
			}
			before := testutil.ToFloat64(e.metrics.evaluations)
			var next atomic.Int64
			b.ReportAllocs()
			cpu := startCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1)) % benchDevices
					e.Observe(devs[i], pts[i])
				}
			})
			cpu.report()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "payloads/s")
			b.ReportMetric((testutil.ToFloat64(e.metrics.evaluations)-before)/float64(b.N), "evals/op")
		})
	}
}

// BenchmarkIngest measures ingest end to end inside the hub: decode, append
// to the durable log (without fsync, so that the disk does not hide the
// cost of the rules), live stream, latest values, and the rule engine,
// from parallel publishers, with 0, 100 and 1,000 rules of the realistic
// mix, and 1,000 thresholds.
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		specs []Spec
	}{
		{"rules=0", nil},
		{"rules=100", benchSpecs(100)},
		{"rules=1000", benchSpecs(1000)},
		{"rules=1000-thresholds", benchThresholds(1000)},
	} {
		n := len(tc.specs)
		b.Run(tc.name, func(b *testing.B) {
			e, hub := benchEngine(b, tc.specs)
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			l, err := wal.Open(filepath.Join(b.TempDir(), "log"), wal.Options{NoSync: true, MaxBytes: 8 << 30}, logger)
			require.NoError(b, err)
			b.Cleanup(func() { l.Close() })
			pipe := ingest.NewPipeline(l, hub, ingest.DefaultLimits(), ingest.NewMetrics(prometheus.NewRegistry()), ingest.NewLatest(), logger)
			if n > 0 {
				pipe.SetObserver(e)
			}
			devs := make([]ingest.Device, benchDevices)
			for i := range devs {
				d := benchDevice(i)
				devs[i] = ingest.Device{ID: d.ID, Type: d.Type}
			}
			ctx := context.Background()
			for i := range devs { // build the per-device rule caches
				_, err := pipe.Ingest(ctx, devs[i], benchPayload(i), ingest.FormatAuto)
				require.NoError(b, err)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8) // publishers: group commit needs several
			cpu := startCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1)) % benchDevices
					if _, err := pipe.Ingest(ctx, devs[i], benchPayload(i), ingest.FormatAuto); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu.report()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "payloads/s")
		})
	}
}

// cpuClock measures the CPU time (user and system, every thread of the
// process) a benchmark spends, which other processes sharing the machine
// disturb far less than its wall time.
type cpuClock struct {
	b     *testing.B
	start time.Duration
	gc    float64
}

func startCPU(b *testing.B) cpuClock {
	runtime.GC() // the garbage of the setup is not the benchmark's
	b.ResetTimer()
	return cpuClock{b, processCPU(), gcCPU()}
}

// report adds cpu-ns/op, and gc-cpu-ns/op: the runtime's estimate of the
// part of it the garbage collector spent.
func (c cpuClock) report() {
	c.b.ReportMetric(float64(processCPU()-c.start)/float64(c.b.N), "cpu-ns/op")
	c.b.ReportMetric((gcCPU()-c.gc)*1e9/float64(c.b.N), "gc-cpu-ns/op")
}

// gcCPU is the CPU time the garbage collector has spent, in seconds.
func gcCPU() float64 {
	s := []rtmetrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	rtmetrics.Read(s)
	return s[0].Value.Float64()
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
