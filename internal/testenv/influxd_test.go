package testenv

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestInfluxdStopStart: a private influxd refuses connections while stopped
// and comes back on the same address with its data.
func TestInfluxdStopStart(t *testing.T) {
	d := StartInfluxd(t)
	write := func(line string) error {
		resp, err := http.Post(d.URL+"/write?"+url.Values{"db": {d.Database}}.Encode(), "text/plain", strings.NewReader(line))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write: %s", resp.Status)
		}
		return nil
	}
	if err := write("telemetry,device_id=a rssi=-60 1700000000000000000"); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	if err := write("telemetry,device_id=a rssi=-61 1700000001000000000"); err == nil {
		t.Fatal("a stopped influxd accepted a write")
	}
	d.Stop() // stopping twice is harmless
	d.Start()
	if err := write("telemetry,device_id=b rssi=-62 1700000002000000000"); err != nil {
		t.Fatal(err)
	}
	d.RequireCounts(t, "telemetry", "rssi", map[string]int{"a": 1, "b": 1}, 10*time.Second)
}

func TestFreePortIsFreeAndNotReused(t *testing.T) {
	seen := map[int]bool{}
	low, _ := ephemeralRange()
	for range 20 {
		p := FreePort(t)
		if seen[p] || p < 10000 || p >= low {
			t.Fatalf("port %d: repeated or outside [10000, %d)", p, low)
		}
		seen[p] = true
	}
}
