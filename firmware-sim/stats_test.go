package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReportProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Token = adminToken
		f, err := New(cfg, nil)
		require.NoError(t, err)
		var out syncBuffer
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { f.ReportProgress(ctx, &out, 2*time.Second) })

		time.Sleep(3 * time.Second)
		synctest.Wait()
		require.Empty(t, out.String(), "nothing to report before provisioning")

		plan := f.plan()[0]
		d := newSimDevice(plan, "token", cfg, f.log)
		d.sent.Add(10)
		d.acked.Add(8)
		f.mu.Lock()
		f.devices = []*simDevice{d}
		f.mu.Unlock()

		time.Sleep(4 * time.Second) // ticks at 4 s and 6 s
		synctest.Wait()
		cancel()
		wg.Wait()
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		require.Equal(t, []string{
			"fleet: 0/1 connected, sent 10 (5.0/s), acked 8 (4.0/s), errors 0",
			"fleet: 0/1 connected, sent 10 (0.0/s), acked 8 (0.0/s), errors 0",
		}, lines)
	})
}

func TestStatsOutput(t *testing.T) {
	st := Stats{
		Sent: 30, Acked: 28, Errors: 2, Connected: 2,
		Devices: []DeviceStats{
			{ID: "sim-thermo-0001", Type: TypeThermostat, Sent: 15, Acked: 15, Connected: true},
			{ID: "sim-wearable-0001", Type: TypeWearable, Sent: 15, Acked: 13, Errors: 2, Connected: true},
		},
	}
	var buf bytes.Buffer
	require.NoError(t, st.WriteText(&buf))
	require.Contains(t, buf.String(), "sent 30, acked 28, errors 2")
	require.Regexp(t, `sim-wearable-0001\s+wearable\s+15\s+13\s+2`, buf.String())

	js, err := json.Marshal(st)
	require.NoError(t, err)
	require.Contains(t, string(js), `"devices":[{"id":"sim-thermo-0001","type":"thermostat","sent":15,"acked":15,"errors":0`)

	prev := Stats{Sent: 10, Acked: 8, Devices: st.Devices}
	require.Equal(t, "fleet: 2/2 connected, sent 30 (10.0/s), acked 28 (10.0/s), errors 2",
		ProgressLine(prev, st, 2*time.Second))
}
