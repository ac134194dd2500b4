// Package forward is store-and-forward from an edge hub to an upstream:
// another Telehub or any MQTT broker. The forwarder is a consumer of the
// durable log, like the store writer: it reads the logged readings in
// order, publishes them upstream with QoS 1 and advances its checkpoint only
// past what the upstream acknowledged. While the uplink is down the
// readings stay in the log, whose byte bound counts the forwarder's backlog,
// so a long outage pushes back on devices instead of losing data. On the
// same connection it can forward the hub's alerts and take commands from
// the upstream (RouteCommands).
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// Consumer is the forwarder's consumer name in the durable log.
const Consumer = "forward"

// disconnectQuiesce is how long (ms) a disconnect waits for work in flight.
const disconnectQuiesce = 250

// WAL is what the forwarder needs of the durable log.
type WAL interface {
	Consumer(name string) *wal.Reader
	Stats() wal.Stats
}

// Stream is the live stream the forwarder takes alerts from.
type Stream interface {
	Read(after uint64, buf []live.Message, max int) ([]live.Message, uint64)
	Changed() <-chan struct{}
	Last() uint64
}

// errAckTimeout ends a connection whose oldest message waited too long.
var errAckTimeout = errors.New("upstream did not acknowledge in time")

// forwardMetrics are the forwarder's metrics.
type forwardMetrics struct {
	Connected    prometheus.Gauge
	Readings     prometheus.Counter
	Messages     prometheus.Counter
	Alerts       prometheus.Counter
	AlertsMissed prometheus.Counter
	Connects     prometheus.Counter
	Failures     prometheus.Counter
	Corrupt      prometheus.Counter
	Lag          prometheus.Gauge
	*commandMetrics
}

func newMetrics(r prometheus.Registerer, f *Forwarder) *forwardMetrics {
	auto := promauto.With(r)
	m := &forwardMetrics{
		Connected:      auto.NewGauge(prometheus.GaugeOpts{Name: "telehub_forward_connected", Help: "1 while the uplink to the upstream is connected."}),
		Readings:       auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_readings_total", Help: "Readings the upstream acknowledged."}),
		Messages:       auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_messages_total", Help: "Telemetry messages the upstream acknowledged (one per logged publish)."}),
		Alerts:         auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_alerts_total", Help: "Alert events the upstream acknowledged."}),
		AlertsMissed:   auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_alerts_missed_total", Help: "Live stream messages that left the replay buffer before the uplink returned; alerts among them were not forwarded."}),
		Connects:       auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_connects_total", Help: "Connections to the upstream established."}),
		Failures:       auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_failures_total", Help: "Connection attempts that failed and connections lost."}),
		Corrupt:        auto.NewCounter(prometheus.CounterOpts{Name: "telehub_forward_corrupt_records_total", Help: "Log records that could not be decoded and were skipped."}),
		Lag:            auto.NewGauge(prometheus.GaugeOpts{Name: "telehub_forward_lag_seconds", Help: "Age, by its timestamp, of the newest reading in the last acknowledged message."}),
		commandMetrics: newCommandMetrics(r),
	}
	auto.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_forward_lag_records", Help: "Log records (publishes) not yet acknowledged by the upstream."}, func() float64 {
		return float64(f.Lag())
	})
	return m
}

// Forwarder moves readings from the durable log to the upstream. Start it
// once; Stop is safe to call twice.
type Forwarder struct {
	cfg    Config
	sec    secrets
	wal    WAL
	stream Stream // nil: neither alerts nor command results are forwarded
	m      *forwardMetrics
	logger *slog.Logger

	acked atomic.Uint64 // log offset before which the upstream acknowledged everything

	alertSeq uint64 // last live seq examined for alerts and command results; owned by the events goroutine of the session

	commands  Commands      // set once by RouteCommands, read after routed is closed
	routed    chan struct{} // closed by RouteCommands
	routeOnce sync.Once

	state stateRoute // desired state from the upstream (state.go)

	answers *answerBook   // nil: answers go only by the live stream (answers.go)
	recheck chan struct{} // the live stream lost completions: go over the answers

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New returns a forwarder reading journal as the consumer "forward" (which
// must be in the log's Options.Consumers). It loads the password file and
// the TLS files now, so that a mistake shows at start-up. stream is read
// for alerts when cfg.Alerts is set, and for the completion of commands
// from the upstream when cfg.Commands is (see RouteCommands).
func New(cfg Config, journal WAL, stream Stream, reg prometheus.Registerer, logger *slog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("forward: no upstream URL")
	}
	sec, err := cfg.load()
	if err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: cfg, sec: sec, wal: journal, logger: logger, routed: make(chan struct{})}
	if (cfg.Alerts || cfg.Commands) && stream != nil {
		f.stream = stream
		f.alertSeq = stream.Last()
	}
	rd := journal.Consumer(Consumer)
	f.acked.Store(rd.Next())
	rd.Close()
	f.m = newMetrics(reg, f)
	f.state.ready, f.state.m = make(chan struct{}), newStateMetrics(reg)
	f.state.up.wake = make(chan struct{}, 1)
	f.recheck = make(chan struct{}, 1)
	if sec.tls == nil && (sec.password != "" || cfg.Username != "") {
		logger.Warn("forwarding without TLS: the upstream credentials and readings travel in clear", "url", cfg.URL)
	}
	return f, nil
}

// Lag returns the number of log records not yet acknowledged by the
// upstream. Safe for concurrent use.
func (f *Forwarder) Lag() uint64 {
	c, a := f.wal.Stats().Committed, f.acked.Load()
	if c < a {
		return 0
	}
	return c - a
}

// Start runs the forwarder until Stop.
func (f *Forwarder) Start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Go(func() { f.run(ctx) })
}

// Stop disconnects from the upstream and stops. What the upstream has not
// acknowledged stays in the log and is sent after the next start. Safe to
// call twice.
func (f *Forwarder) Stop() {
	f.once.Do(func() {
		if f.cancel != nil {
			f.cancel()
			f.wg.Wait()
		}
	})
}

// run keeps a connection to the upstream, reconnecting with exponential
// backoff and jitter.
func (f *Forwarder) run(ctx context.Context) {
	backoff := f.cfg.RetryMin
	warn := true // log the first failure, and the loss of a working uplink, as warnings
	for {
		progressed, err := f.session(ctx)
		f.m.Connected.Set(0)
		if ctx.Err() != nil {
			return
		}
		f.m.Failures.Inc()
		if progressed {
			backoff, warn = f.cfg.RetryMin, true
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if warn {
			f.logger.Warn("uplink down; readings stay in the durable log", "url", f.cfg.URL, "err", err,
				"pending_records", f.Lag(), "retry_in", wait.Round(time.Millisecond))
		} else {
			f.logger.Debug("uplink still down", "err", err, "pending_records", f.Lag(), "retry_in", wait.Round(time.Millisecond))
		}
		warn = false
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, f.cfg.RetryMax)
	}
}

// inflight is a published record waiting for its acknowledgement.
type inflight struct {
	tok      paho.Token // nil: nothing was sent (a corrupt record skipped)
	end      uint64     // log offset after the record
	readings int
	newest   time.Time
}

func (p inflight) done() bool {
	if p.tok == nil {
		return true
	}
	select {
	case <-p.tok.Done():
		return true
	default:
		return false
	}
}

// session connects, forwards until the connection fails or ctx ends, and
// disconnects. progressed reports whether it connected.
func (f *Forwarder) session(ctx context.Context) (progressed bool, err error) {
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker(f.cfg.URL).SetClientID(f.sec.clientID).
		SetUsername(f.cfg.Username).SetPassword(f.sec.password).
		// A clean session: after a reconnect the forwarder itself resends
		// from its checkpoint, in order.
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(f.cfg.ConnectTimeout).SetKeepAlive(f.cfg.KeepAlive).
		SetWriteTimeout(f.cfg.AckTimeout).SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if f.sec.tls != nil {
		opts.SetTLSConfig(f.sec.tls)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return false, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer c.Disconnect(disconnectQuiesce)
	f.m.Connected.Set(1)
	f.m.Connects.Inc()
	f.logger.Info("uplink connected", "url", f.cfg.URL, "client_id", f.sec.clientID, "pending_records", f.Lag())

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	alertErr := make(chan error, 1)
	if f.stream != nil {
		wg.Go(func() {
			if err := f.alerts(sctx, c); err != nil && sctx.Err() == nil {
				alertErr <- err
			}
		})
	}
	if f.cfg.Commands {
		wg.Go(func() { f.subscribeCommands(sctx, c) })
		wg.Go(func() { f.relayPending(sctx, c) })
	}
	if f.cfg.State {
		wg.Go(func() { f.routeDesired(sctx, c) })
		wg.Go(func() { f.relayReported(sctx, c) })
	}
	return true, f.pump(ctx, c, lost, alertErr)
}

// pump publishes the log in order, at most MaxInflight messages ahead of
// the upstream's acknowledgements, and checkpoints what was acknowledged.
func (f *Forwarder) pump(ctx context.Context, c paho.Client, lost, alertErr <-chan error) error {
	rd := f.wal.Consumer(Consumer)
	defer rd.Close()
	var (
		pending []inflight
		rs      []ingest.Reading
	)
	timer := time.NewTimer(f.cfg.AckTimeout)
	defer timer.Stop()
	for {
		for len(pending) < f.cfg.MaxInflight && rd.Available() {
			recs, first, err := rd.Read(f.cfg.MaxInflight - len(pending))
			if err != nil {
				return fmt.Errorf("read durable log: %w", err)
			}
			for i, rec := range recs {
				p := inflight{end: first + uint64(i) + 1}
				rs, err = ingest.DecodeRecord(rs[:0], rec)
				if err != nil || len(rs) == 0 {
					f.m.Corrupt.Inc()
					f.logger.Error("skipping a log record that does not decode", "offset", p.end-1, "err", err)
				} else {
					// A fresh buffer each: paho keeps the payload until it is acknowledged.
					payload := appendPayload(make([]byte, 0, len(rec)*2), rs)
					p.tok = c.Publish(topic(f.cfg.Topic, rs[0].DeviceID, rs[0].DeviceType), f.cfg.QoS, false, payload)
					p.readings, p.newest = len(rs), rs[len(rs)-1].Time
				}
				if len(pending) == 0 {
					timer.Reset(f.cfg.AckTimeout) // the head's clock starts now
				}
				pending = append(pending, p)
			}
		}

		// Settle the acknowledged head of the window and checkpoint past it.
		n := 0
		for n < len(pending) && pending[n].done() {
			if p := pending[n]; p.tok != nil {
				if err := p.tok.Error(); err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				f.m.Messages.Inc()
				f.m.Readings.Add(float64(p.readings))
				f.m.Lag.Set(time.Since(p.newest).Seconds())
			}
			n++
		}
		if n > 0 {
			end := pending[n-1].end
			if err := rd.Checkpoint(end); err != nil {
				f.logger.Warn("write forward checkpoint", "err", err)
			}
			f.acked.Store(end)
			pending = append(pending[:0], pending[n:]...)
			timer.Reset(f.cfg.AckTimeout)
			continue
		}

		var head, more <-chan struct{}
		var deadline <-chan time.Time
		if len(pending) > 0 {
			head, deadline = pending[0].tok.Done(), timer.C
		}
		if len(pending) < f.cfg.MaxInflight {
			more = rd.Changed()
			if rd.Available() {
				continue
			}
		}
		select {
		case <-head:
		case <-more:
		case <-deadline:
			return errAckTimeout
		case err := <-lost:
			return fmt.Errorf("connection lost: %w", err)
		case err := <-alertErr:
			return fmt.Errorf("forward alerts: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// alerts forwards alert events (when configured) and the results of
// commands from the upstream (see commands.go) from the live stream, one at
// a time, until ctx ends or a publish fails.
func (f *Forwarder) alerts(ctx context.Context, c paho.Client) error {
	var buf []live.Message
	for {
		ch := f.stream.Changed()
		var missed uint64
		buf, missed = f.stream.Read(f.alertSeq, buf[:0], 256)
		if missed > 0 {
			f.m.AlertsMissed.Add(float64(missed))
			select { // answers among them are in the pending list
			case f.recheck <- struct{}{}:
			default:
			}
			f.logger.Warn("alerts raised and command results reached while the uplink was down may be lost: the live stream moved past them", "messages_missed", missed)
		}
		for _, m := range buf {
			if m.Kind == live.KindCommand && f.cfg.Commands {
				if err := f.forwardResult(ctx, c, m); err != nil {
					return err
				}
			}
			if m.Kind == live.KindAlert && f.cfg.Alerts {
				tok := c.Publish(topic(f.cfg.AlertTopic, m.DeviceID, ""), f.cfg.QoS, false, m.Body)
				if err := f.await(ctx, tok); err != nil {
					return err
				}
				f.m.Alerts.Inc()
			}
			f.alertSeq = m.Seq
		}
		if len(buf) > 0 {
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
