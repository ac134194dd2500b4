package web

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/testenv"
)

// BenchmarkLiveFanout delivers b.N readings, published at a steady rate,
// to WebSocket dashboards on loopback (load.Dashboards, as make bench uses)
// and reports the process's CPU time per reading (server and dashboards
// together) and the publish-to-dashboard latency. write_every=0s writes
// each message as soon as it is published.
//
//	go test ./web -run XXX -bench LiveFanout -benchtime 50000x
func BenchmarkLiveFanout(b *testing.B) {
	for _, bc := range []struct {
		clients int
		rate    float64
	}{{10, 10000}, {100, 1000}} {
		for _, every := range []time.Duration{0, time.Millisecond} {
			b.Run(fmt.Sprintf("clients=%d/rate=%v/write_every=%v", bc.clients, bc.rate, every), func(b *testing.B) {
				benchFanout(b, bc.clients, every, bc.rate)
			})
		}
	}
}

func benchFanout(b *testing.B, clients int, every time.Duration, rate float64) {
	hub := live.New(65536)
	srv, _ := newServerWith(b, hub, StreamConfig{WriteEvery: every})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/live?kinds=reading"
	dash, err := load.Dashboards(context.Background(), url, adminToken, clients)
	require.NoError(b, err)
	b.Cleanup(dash.Close)
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := range b.N {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		body := strconv.AppendInt([]byte(`{"kind":"reading","device_id":"t1","device_type":"thermostat","fields":{"t":21.5,"sent_us":`), time.Now().UnixMicro(), 10)
		hub.Publish(live.Message{Kind: live.KindReading, DeviceID: "t1", Body: append(body, "}}"...)})
	}
	want := int64(b.N * clients)
	testenv.Eventually(b, 30*time.Second, "dashboards receive every reading", func() bool { return dash.Result().Readings >= want })
	b.StopTimer()
	r := dash.Result()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/reading")
	b.ReportMetric(float64(r.Latency.P50)/1e6, "p50-ms")
	b.ReportMetric(float64(r.Latency.P99)/1e6, "p99-ms")
}

// cpuTime is the user and system time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
