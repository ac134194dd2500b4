package load_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/loadgen/load"
	"github.com/telehub/telehub/cmd/telehub/app"
	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// benchHub starts a hub for profiling: InfluxDB when TELEHUB_TEST_INFLUX_URL
// and TELEHUB_BENCH_DB are set, else the embedded store.
func benchHub(b *testing.B) *app.App {
	cfg := config.Default()
	cfg.DataDir = b.TempDir()
	cfg.LogLevel = "warn"
	cfg.MQTT.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTT.MessageRate, cfg.MQTT.ConnectRate = 0, 0
	if u, db := os.Getenv("TELEHUB_TEST_INFLUX_URL"), os.Getenv("TELEHUB_BENCH_DB"); u != "" && db != "" {
		cfg.Influx.URL, cfg.Influx.Bucket = u, db
	}
	require.NoError(b, cfg.Validate())
	hub, err := app.Start(context.Background(), cfg, testenv.Logger(b))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, hub.Stop()) })
	return hub
}

func benchFleet(b *testing.B, hub *app.App, n int) *load.Fleet {
	devs, err := load.Provision(context.Background(), "http://"+hub.HTTPAddr(), hub.AdminToken, load.DeviceIDs("bench", n), "thermostat")
	require.NoError(b, err)
	f, _, err := load.Connect(context.Background(), load.FleetConfig{Addr: hub.MQTTAddr(), Devices: devs, SourceIPs: 8, KeepAlive: time.Minute})
	require.NoError(b, err)
	b.Cleanup(f.Close)
	return f
}

// BenchmarkHubIngest profiles the ingest path end to end (MQTT, hooks,
// decode, durable log, live ring, store writer) with the generator in the
// same process: b.N readings offered at 40,000/s over 500 devices.
//
//	go test ./cmd/loadgen/load -run XXX -bench HubIngest -benchtime 200000x -cpuprofile cpu.prof
func BenchmarkHubIngest(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(map[byte]string{0: "qos=0", 1: "qos=1"}[qos], func(b *testing.B) {
			hub := benchHub(b)
			f := benchFleet(b, hub, 500)
			const rate = 40000
			b.ResetTimer()
			res, err := f.Publish(context.Background(), load.PublishConfig{Rate: rate, Duration: time.Duration(float64(b.N) / rate * float64(time.Second)), QoS: qos})
			require.NoError(b, err)
			b.ReportMetric(res.SendRate(), "readings/s")
			if qos > 0 {
				b.ReportMetric(float64(res.Ack.P99)/1e6, "ack-p99-ms")
			}
		})
	}
}

// BenchmarkHubFanout profiles the live stream: devices publishing at QoS 1
// to WebSocket dashboards, b.N readings in all.
//
//	go test ./cmd/loadgen/load -run XXX -bench 'HubFanout/dashboards=10$' -benchtime 100000x -cpuprofile cpu.prof
func BenchmarkHubFanout(b *testing.B) {
	for _, bc := range []struct {
		dashboards int
		rate       float64
	}{{10, 10000}, {100, 1000}, {1000, 100}} {
		b.Run(fmt.Sprintf("dashboards=%d", bc.dashboards), func(b *testing.B) {
			hub := benchHub(b)
			f := benchFleet(b, hub, 200)
			dash, err := load.Dashboards(context.Background(), "ws://"+hub.HTTPAddr()+"/api/v1/live?kinds=reading", hub.AdminToken, bc.dashboards)
			require.NoError(b, err)
			b.Cleanup(dash.Close)
			b.ResetTimer()
			res, err := f.Publish(context.Background(), load.PublishConfig{Rate: bc.rate, Duration: time.Duration(float64(b.N) / bc.rate * float64(time.Second)), QoS: 1})
			require.NoError(b, err)
			want := res.Sent * int64(bc.dashboards)
			testenv.Eventually(b, 20*time.Second, "dashboards receive the readings", func() bool { return dash.Result().Readings >= want })
			b.ReportMetric(float64(dash.Result().Latency.P50)/1e6, "live-p50-ms")
			b.ReportMetric(float64(dash.Result().Latency.P99)/1e6, "live-p99-ms")
			b.ReportMetric(float64(res.Ack.P99)/1e6, "ack-p99-ms")
		})
	}
}
