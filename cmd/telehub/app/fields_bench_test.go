package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/testenv"
)

// BenchmarkFieldFloodHub is the security review's repro against a whole
// hub (embedded store, its head included): one device publishes 30 QoS 1
// batches of 70 points, each point with 250 field names never seen
// before, then the hub flushes its store. It reports the heap the hub
// keeps afterwards (heap-MB, after a GC) and the size of the device's API
// answer (api-KB), with the default cap of 1,024 fields per device and
// with the cap lifted. Not a timed test: run it with -benchtime=1x.
func BenchmarkFieldFloodHub(b *testing.B) {
	batches := make([]string, 30)
	name := 0
	for i := range batches {
		buf := []byte{'['}
		for p := range 70 {
			if p > 0 {
				buf = append(buf, ',')
			}
			buf = fmt.Appendf(buf, `{"ts":%d`, time.Now().Add(-time.Hour).UnixMilli()+int64(i*70+p))
			for range 250 {
				name++
				buf = fmt.Appendf(buf, `,"n%06d":1`, name)
			}
			buf = append(buf, '}')
		}
		batches[i] = string(append(buf, ']'))
	}
	for _, limit := range []int{config.Default().Ingest.MaxFieldsPerDevice, 1 << 30} {
		label := fmt.Sprint(limit)
		if limit == 1<<30 {
			label = "none"
		}
		b.Run("cap="+label, func(b *testing.B) {
			var heap, api float64
			for b.Loop() {
				heap, api = fieldFlood(b, limit, batches)
			}
			b.ReportMetric(heap, "heap-MB")
			b.ReportMetric(api, "api-KB")
		})
	}
}

func fieldFlood(b *testing.B, limit int, batches []string) (heapMB, apiKB float64) {
	cfg := config.Default()
	cfg.DataDir = b.TempDir()
	cfg.MQTT.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Ingest.MaxFieldsPerDevice = limit
	a, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Stop()
	_, token, err := a.registry.Create(devices.Device{ID: "flood", Type: "t"})
	if err != nil {
		b.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID("flood").
		SetUsername("flood").SetPassword(token).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	before := heapBytes()
	for _, batch := range batches {
		if tok := c.Publish("devices/flood/telemetry", 1, false, batch); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			b.Fatalf("publish: %v", tok.Error())
		}
	}
	// Wait until the writer has moved what was accepted into the store's
	// head, so that the heap includes it.
	metrics := "http://" + a.HTTPAddr() + "/metrics"
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		m, err := testenv.Metrics(metrics)
		if err != nil {
			b.Fatal(err)
		}
		if m["telehub_store_readings_written_total"] >= m["telehub_ingest_readings_total"] {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the writer did not catch up")
		}
	}
	heapMB = float64(heapBytes()-before) / (1 << 20)
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+"/api/v1/devices/flood", nil)
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("GET device: %d %v", res.StatusCode, err)
	}
	apiKB = float64(len(body)) / 1024
	return heapMB, apiKB
}

func heapBytes() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
