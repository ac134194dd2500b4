package ingest

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/metrics"
	"github.com/telehub/telehub/internal/wal"
)

// BenchmarkPipelineIngest is the hub's side of one telemetry publish after
// MQTT: decode, log record, durable log append (group commit shared by 64
// concurrent publishers, with and without fsync), latest values and the
// live ring. Run with -cpuprofile to see where it goes.
func BenchmarkPipelineIngest(b *testing.B) {
	payload := []byte(`{"ts":1732350000123,"temperature":21.37,"humidity":41.2,"battery":87,"seq":1234,"sent_us":1732350000123456}`)
	for _, sync := range []bool{false, true} {
		name := map[bool]string{false: "nosync", true: "fsync"}[sync]
		b.Run(name, func(b *testing.B) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			l, err := wal.Open(b.TempDir(), wal.Options{NoSync: !sync, MaxBytes: 8 << 30}, logger)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			p := NewPipeline(l, live.New(65536), DefaultLimits(), NewMetrics(metrics.NewRegistry()), NewLatest(), logger)
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
