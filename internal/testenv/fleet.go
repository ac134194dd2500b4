package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	firmwaresim "github.com/telehub/telehub/firmware-sim"
)

// Fleet is a simulated fleet publishing to a hub in the background of a
// test until Finish.
type Fleet struct {
	fleet   *firmwaresim.Fleet
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	timeout time.Duration
}

// StartFleet starts 5 thermostats and 5 wearables with IDs under prefix,
// publishing QoS 1 every 50 ms and reconnecting within 100 ms when the hub
// drops them. WaitAcked gives up after timeout.
func StartFleet(t *testing.T, hubURL, mqttURL, token, prefix string, timeout time.Duration) *Fleet {
	t.Helper()
	cfg := firmwaresim.DefaultConfig()
	cfg.HubURL, cfg.MQTTURL, cfg.Token = hubURL, mqttURL, token
	cfg.IDPrefix = prefix
	cfg.Thermostats, cfg.Wearables = 5, 5
	cfg.Interval = 50 * time.Millisecond
	cfg.QoS = 1
	cfg.ReconnectInterval = 100 * time.Millisecond
	f, err := firmwaresim.New(cfg, Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	fl := &Fleet{fleet: f, cancel: cancel, done: make(chan struct{}), timeout: timeout}
	go func() {
		defer close(fl.done)
		fl.err = f.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-fl.done })
	return fl
}

// Stats returns the fleet's counters so far.
func (f *Fleet) Stats() firmwaresim.Stats { return f.fleet.Stats() }

// WaitAcked waits until the fleet has had n readings acknowledged in all.
func (f *Fleet) WaitAcked(t *testing.T, n int64) {
	t.Helper()
	Eventually(t, f.timeout, fmt.Sprintf("fleet acknowledged %d readings", n), func() bool {
		return f.Stats().Acked >= n
	})
}

// Finish stops publishing, waits for the outstanding acknowledgements and
// returns the final counters.
func (f *Fleet) Finish(t *testing.T) firmwaresim.Stats {
	t.Helper()
	f.cancel()
	<-f.done
	require.NoError(t, f.err)
	return f.Stats()
}
