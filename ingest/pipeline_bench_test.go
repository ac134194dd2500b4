package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// BenchmarkPipelineIngest is the hub's side of one telemetry publish after
// MQTT: decode, log record, durable log append (group commit shared by 64
// concurrent publishers, with and without fsync), latest values and the
// live ring. Run with -cpuprofile to see where it goes.
func BenchmarkPipelineIngest(b *testing.B) {
	payload := []byte(`{"ts":1732350000123,"temperature":21.37,"humidity":41.2,"battery":87,"seq":1234,"sent_us":1732350000123456}`)
	for _, tc := range []struct {
		sync, fields bool
	}{{false, false}, {false, true}, {true, false}, {true, true}} {
		sync := tc.sync
		name := map[bool]string{false: "nosync", true: "fsync"}[sync] + map[bool]string{false: "", true: "/fieldcap"}[tc.fields]
		b.Run(name, func(b *testing.B) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			l, err := wal.Open(b.TempDir(), wal.Options{NoSync: !sync, MaxBytes: 8 << 30}, logger)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			p := NewPipeline(l, live.New(65536), DefaultLimits(), NewMetrics(prometheus.NewRegistry()), NewLatest(), logger)
			if tc.fields { // the per-device field cap: a map lookup per field
				f, _, err := NewFields(nil, DefaultConfig().MaxFieldsPerDevice, logger)
				if err != nil {
					b.Fatal(err)
				}
				p.SetFields(f)
			}
			dev := Device{ID: "bench-000001", Type: "thermostat"}
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.Ingest(context.Background(), dev, payload, FormatAuto); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkFieldFlood is the security review's repro without MQTT: one
// device sends 30 batches of 70 points, each point with 250 field names
// never seen before, then 3,000 payloads of 10 new names each, through the
// pipeline (log without fsync, latest values). It reports the heap kept afterwards (heap-MB, after a GC) with
// the default cap of 1,024 fields per device and without a cap. Not a
// timed test: run it with -benchtime=1x.
func BenchmarkFieldFlood(b *testing.B) {
	batches := make([][]byte, 30)
	for i := range batches {
		var buf []byte
		buf = append(buf, '[')
		for p := range 70 {
			if p > 0 {
				buf = append(buf, ',')
			}
			buf = fmt.Appendf(buf, `{"ts":%d`, 1732350000000+int64(i*70+p))
			for f := range 250 {
				buf = fmt.Appendf(buf, `,"flood_%02d_%02d_%03d_with_a_longish_name":%d`, i, p, f, f)
			}
			buf = append(buf, '}')
		}
		batches[i] = append(buf, ']')
	}
	// Then names in small steps, so that the cap fills before it refuses:
	// 3,000 payloads of one point with 10 new names each.
	for i := range 3000 {
		buf := fmt.Appendf(nil, `{"ts":%d`, 1732360000000+int64(i))
		for f := range 10 {
			buf = fmt.Appendf(buf, `,"trickle_%04d_%02d_with_a_longish_name":%d`, i, f, f)
		}
		batches = append(batches, append(buf, '}'))
	}
	for _, limit := range []int{DefaultConfig().MaxFieldsPerDevice, 0} {
		b.Run(fmt.Sprintf("cap=%d", limit), func(b *testing.B) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			var heap float64
			refused := 0
			for b.Loop() {
				l, err := wal.Open(b.TempDir(), wal.Options{NoSync: true, MaxBytes: 8 << 30}, logger)
				if err != nil {
					b.Fatal(err)
				}
				latest := NewLatest()
				// A small live ring: it is bounded anyway, and a large one
				// would hide what the latest values keep.
				p := NewPipeline(l, live.New(16), Limits{MaxPoints: 10000, MaxFields: 256, MaxNameLen: 128, MaxStringLen: 4096},
					NewMetrics(prometheus.NewRegistry()), latest, logger)
				var f *Fields
				if limit > 0 {
					f, _, _ = NewFields(nil, limit, logger)
					p.SetFields(f)
				}
				before := heapInUse()
				for _, batch := range batches {
					if _, err := p.Ingest(context.Background(), Device{ID: "flood", Type: "t"}, batch, FormatAuto); err != nil {
						refused++
					}
				}
				heap = float64(heapInUse()-before) / (1 << 20)
				l.Close()
				runtime.KeepAlive(latest)
				runtime.KeepAlive(f)
			}
			b.ReportMetric(heap, "heap-MB")
			b.ReportMetric(float64(refused)/float64(b.N), "refused-payloads")
		})
	}
}

// heapInUse returns the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
