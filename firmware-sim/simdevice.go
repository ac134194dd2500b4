package firmwaresim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Reasons a reading fails without a publish.
var (
	errBacklogFull  = errors.New("too many readings waiting for acknowledgement")
	errNotConnected = errors.New("not connected (qos 0 reading dropped)")
	errUnacked      = errors.New("unacknowledged at shutdown")
)

// runConfig is what a device's publish loop needs from Config.
type runConfig struct {
	interval     time.Duration
	qos          byte
	maxPending   int
	drainTimeout time.Duration
}

// simDevice is one simulated device on the network: its model, MQTT client
// and counters. The model, ts clock and failure state belong to the run
// goroutine; the counters and client are safe for concurrent use.
type simDevice struct {
	id     string
	typ    string
	topic  string
	model  Device
	jitter time.Duration
	client paho.Client
	log    *slog.Logger

	clock   tsClock
	failing bool // the last reading failed; logs only state changes

	ctl deviceControl // commands and desired state (commands.go); run goroutine

	sent, acked, errs atomic.Int64
	connFailing       atomic.Bool
}

func newSimDevice(p plannedDevice, token string, cfg Config, log *slog.Logger) *simDevice {
	d := &simDevice{
		id:     p.spec.ID,
		typ:    p.spec.Type,
		topic:  "devices/" + p.spec.ID + "/telemetry",
		model:  p.model,
		jitter: p.jitter,
		log:    log.With("device_id", p.spec.ID),
	}
	d.initControl(cfg)
	d.client = newMQTTClient(p.spec.ID, token, cfg, d)
	return d
}

// run publishes a reading every interval, after the device's start jitter,
// until ctx is done; then it waits for outstanding acknowledgements up to
// the drain timeout. Acknowledgements are settled oldest first, as the
// broker sends them for one client.
func (d *simDevice) run(ctx context.Context, rc runConfig) {
	var pending []paho.Token
	start := time.NewTimer(d.jitter)
	defer start.Stop()
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	var tick <-chan time.Time
	for {
		var head <-chan struct{}
		if len(pending) > 0 {
			head = pending[0].Done()
		}
		select {
		case <-ctx.Done():
			d.drain(pending, rc.drainTimeout)
			return
		case <-start.C:
			ticker = time.NewTicker(d.publishInterval(rc.interval))
			tick = ticker.C
			pending = d.publish(pending, rc)
		case <-tick:
			pending = d.publish(pending, rc)
		case in := <-d.ctl.inbox:
			if iv := d.handleInbound(in); iv > 0 {
				if ticker != nil {
					ticker.Reset(iv)
				} else {
					start.Reset(iv) // not publishing yet: start at the new rate
				}
			}
		case <-head:
			d.settle(pending[0])
			pending[0] = nil
			pending = pending[1:]
		}
	}
}

// publish takes a reading and hands it to the MQTT client, returning the
// pending acknowledgements with the new one appended.
func (d *simDevice) publish(pending []paho.Token, rc runConfig) []paho.Token {
	now := time.Now()
	reading := d.model.Step(d.simTime(now))
	reading[FieldTS] = d.clock.next(now)
	d.sent.Add(1)

	if len(pending) >= rc.maxPending {
		d.fail(errBacklogFull)
		return pending
	}
	// paho reports a QoS 0 publish as complete while reconnecting without
	// sending it: count it as lost instead.
	if rc.qos == 0 && !d.client.IsConnectionOpen() {
		d.fail(errNotConnected)
		return pending
	}
	payload, err := json.Marshal(reading)
	if err != nil {
		d.fail(err)
		return pending
	}
	return append(pending, d.client.Publish(d.topic, rc.qos, false, payload))
}

// settle counts a completed publish.
func (d *simDevice) settle(tok paho.Token) {
	if err := tok.Error(); err != nil {
		d.fail(err)
		return
	}
	d.acked.Add(1)
	if d.failing {
		d.failing = false
		d.log.Info("publishing recovered")
	}
}

// fail counts a failed reading and logs the first of a series.
func (d *simDevice) fail(err error) {
	d.errs.Add(1)
	if !d.failing {
		d.failing = true
		d.log.Warn("reading not delivered", "err", err)
		return
	}
	d.log.Debug("reading not delivered", "err", err)
}

// drain waits up to timeout for the pending acknowledgements and counts
// those still missing as errors.
func (d *simDevice) drain(pending []paho.Token, timeout time.Duration) {
	if len(pending) == 0 {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for len(pending) > 0 {
		select {
		case <-pending[0].Done():
			d.settle(pending[0])
			pending = pending[1:]
		case <-t.C:
			d.errs.Add(int64(len(pending)))
			d.log.Warn("readings not acknowledged before shutdown", "count", len(pending), "err", errUnacked)
			return
		}
	}
}

func (d *simDevice) onConnect() {
	d.connFailing.Store(false)
	d.log.Debug("mqtt connected")
	d.subscribe()
}

func (d *simDevice) onConnectionLost(err error) {
	d.log.Warn("mqtt connection lost", "err", err)
}

// onConnectFailed logs a failed connection attempt. Network errors are
// expected while the hub is away and are logged at debug level; a refused
// CONNECT is logged once per series as a warning, since it will not go away
// by itself.
func (d *simDevice) onConnectFailed(err error) {
	if !errors.Is(err, packets.ErrorNetworkError) && d.connFailing.CompareAndSwap(false, true) {
		d.log.Warn("mqtt connect refused, retrying; was the device's token rotated "+
			"(another fleet with the same ID prefix?)", "err", err)
		return
	}
	d.log.Debug("mqtt connect failed, retrying", "err", err)
}

// stats returns the device's counters. Safe for concurrent use. Outcomes are
// loaded before sent, so that acked+errors never exceeds sent in a snapshot.
func (d *simDevice) stats() DeviceStats {
	acked, errs := d.acked.Load(), d.errs.Load()
	return DeviceStats{
		ID:        d.id,
		Type:      d.typ,
		Sent:      d.sent.Load(),
		Acked:     acked,
		Errors:    errs,
		Connected: d.client.IsConnectionOpen(),
	}
}
