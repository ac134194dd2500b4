package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// ErrBackpressure is returned by Ingest when the durable log is full: the
// reading was not accepted and the device should retry later.
var ErrBackpressure = errors.New("ingest: durable log full, try again later")

// ErrLogFailing is returned by Ingest while the durable log cannot write to
// disk (wal.ErrFailing): the reading was refused at once. It is an
// ErrBackpressure, so callers push back on the device as for a full log.
var ErrLogFailing = fmt.Errorf("%w: it cannot write to disk", ErrBackpressure)

// WAL is the durable log the pipeline appends to.
type WAL interface {
	Submit(ctx context.Context, recs ...[]byte) (wal.Commit, error)
	Enqueue(ctx context.Context, recs ...[]byte) error
}

// Publisher takes messages for the live stream; it must not block.
type Publisher interface {
	Publish(msgs ...live.Message)
}

// Observer is told of a device's readings once they are in the log (the
// alert rule engine), which may be just before they are durable. It runs
// on the publishing client's goroutine, so it must do bounded work and never
// block; it must not keep pts, whose strings share the payload's buffer.
type Observer interface {
	Observe(dev Device, pts []Point)
}

// Device identifies the sender of a payload.
type Device struct {
	ID   string
	Type string
}

// Metrics are the pipeline's counters.
type Metrics struct {
	Payloads     prometheus.Counter
	Readings     prometheus.Counter
	Rejected     prometheus.Counter
	Backpressure prometheus.Counter
	LogErrors    prometheus.Counter
	LogFailing   prometheus.Counter
	Fields       prometheus.Counter
}

// NewMetrics registers the pipeline's metrics with r (nil: unregistered).
// Each reason's counter is resolved here, once, not per payload.
func NewMetrics(r prometheus.Registerer) *Metrics {
	f := promauto.With(r)
	rejected := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_ingest_rejected_total",
		Help: "Telemetry payloads refused, by reason."}, []string{"reason"})
	return &Metrics{
		Payloads:     f.NewCounter(prometheus.CounterOpts{Name: "telehub_ingest_payloads_total", Help: "Telemetry payloads accepted into the durable log."}),
		Readings:     f.NewCounter(prometheus.CounterOpts{Name: "telehub_ingest_readings_total", Help: "Readings accepted into the durable log."}),
		Rejected:     rejected.WithLabelValues("decode"),
		Backpressure: rejected.WithLabelValues("log_full"),
		LogErrors:    rejected.WithLabelValues("log_error"),
		LogFailing:   rejected.WithLabelValues("log_failing"),
		Fields:       rejected.WithLabelValues("fields"),
	}
}

// Pipeline turns a device's payload into durable readings and live messages.
// Safe for concurrent use: each publishing client calls Ingest from its own
// goroutine.
type Pipeline struct {
	wal     WAL
	live    Publisher
	limits  Limits
	metrics *Metrics
	logger  *slog.Logger
	latest  *Latest
	observe Observer // nil: none
	fields  *Fields  // nil: no cap
	warn    warnEvery
}

// SetObserver registers o to see every logged reading. Call it before the
// broker starts.
func (p *Pipeline) SetObserver(o Observer) { p.observe = o }

// SetFields makes the pipeline refuse payloads that would give a device
// more distinct fields than f allows. Call it before the broker starts.
func (p *Pipeline) SetFields(f *Fields) { p.fields = f }

// NewPipeline returns a pipeline appending to journal and publishing to pub.
func NewPipeline(journal WAL, pub Publisher, lim Limits, m *Metrics, latest *Latest, logger *slog.Logger) *Pipeline {
	return &Pipeline{wal: journal, live: pub, limits: lim, metrics: m, latest: latest, logger: logger}
}

// Ingest decodes a telemetry payload of dev and appends it to the durable log.
// It returns once the readings are on disk, so the caller may acknowledge
// them. A *DecodeError means the payload is bad; ErrBackpressure that the log
// is full.
func (p *Pipeline) Ingest(ctx context.Context, dev Device, payload []byte, f Format) (int, error) {
	n, c, err := p.ingest(ctx, dev, payload, f, true)
	if err != nil {
		return 0, err
	}
	if _, err := c.Wait(); err != nil {
		return 0, p.logFailed(dev, err)
	}
	return n, nil
}

// IngestAsync is Ingest without the wait for the fsync: it returns once the
// readings are handed to the log's next sync, with their commit. The
// caller must wait on it (Commit.Wait) before it acknowledges the readings;
// if the wait fails, the readings are not stored and the sender must send
// them again. Meanwhile the caller can take the sender's next payload (the
// broker reads the client's next publish and holds back the PUBACKs, see
// broker's ackHold), so that one device's throughput is not one payload
// per fsync. The live stream and the observer see the readings at once.
func (p *Pipeline) IngestAsync(ctx context.Context, dev Device, payload []byte, f Format) (int, wal.Commit, error) {
	return p.ingest(ctx, dev, payload, f, true)
}

// IngestNoWait is Ingest for payloads that get no acknowledgement (MQTT QoS
// 0): the readings go into the log's next sync without waiting for its
// fsync, so a QoS 0 publisher never pays the disk's latency. A crash before
// that sync loses them, as QoS 0 allows.
func (p *Pipeline) IngestNoWait(ctx context.Context, dev Device, payload []byte, f Format) (int, error) {
	n, _, err := p.ingest(ctx, dev, payload, f, false)
	return n, err
}

// logFailed counts and reports a reading the log did not take.
func (p *Pipeline) logFailed(dev Device, err error) error {
	if errors.Is(err, wal.ErrFull) {
		p.metrics.Backpressure.Inc()
		return ErrBackpressure
	}
	if errors.Is(err, wal.ErrFailing) {
		p.metrics.LogFailing.Inc() // the log says why, every 10 s
		return ErrLogFailing
	}
	p.metrics.LogErrors.Inc()
	p.logger.Error("telemetry not logged", "device_id", dev.ID, "err", err)
	return fmt.Errorf("ingest: append to log: %w", err)
}

// ingest decodes and appends a payload. ack says the sender is acknowledged
// once the readings are durable: it gets their commit to wait on (Submit);
// otherwise they are enqueued and the commit is zero.
func (p *Pipeline) ingest(ctx context.Context, dev Device, payload []byte, f Format, ack bool) (int, wal.Commit, error) {
	now := time.Now()
	pts, err := Decode(payload, f, now, p.limits)
	if err != nil {
		p.metrics.Rejected.Inc()
		p.logger.Warn("telemetry rejected", "device_id", dev.ID, "err", err)
		return 0, wal.Commit{}, err
	}
	if p.fields != nil {
		if err := p.fields.Admit(dev.ID, pts); err != nil {
			p.metrics.Fields.Inc()
			p.warn.Warn(p.logger, "telemetry refused: the device has too many distinct fields", "device_id", dev.ID, "err", err)
			return 0, wal.Commit{}, err
		}
	}
	// The log keeps the record until its sync: it cannot be reused.
	rec := AppendRecord(make([]byte, 0, 64+len(payload)), dev.ID, dev.Type, pts)
	var c wal.Commit
	if ack {
		c, err = p.wal.Submit(ctx, rec)
	} else {
		err = p.wal.Enqueue(ctx, rec)
	}
	if err != nil {
		return 0, wal.Commit{}, p.logFailed(dev, err)
	}
	p.metrics.Payloads.Inc()
	p.metrics.Readings.Add(float64(len(pts)))
	msgs := make([]live.Message, len(pts))
	lrs := make([]LiveReading, len(pts))
	for i, pt := range pts {
		lrs[i].Reading = Reading{DeviceID: dev.ID, DeviceType: dev.Type, Time: pt.Time, Fields: pt.Fields}
		msgs[i] = live.Message{Kind: live.KindReading, DeviceID: dev.ID, Data: &lrs[i]}
		p.latest.Update(dev.ID, pt)
	}
	p.live.Publish(msgs...)
	if p.observe != nil {
		p.observe.Observe(dev, pts)
	}
	return len(pts), c, nil
}

// warnEvery logs at most one warning a second and counts the lines it
// held back, so that a device flooding bad payloads costs a counter, not a
// log line each. Safe for concurrent use.
type warnEvery struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// Warn logs msg unless a line was logged less than a second ago.
func (w *warnEvery) Warn(l *slog.Logger, msg string, args ...any) {
	now := time.Now()
	w.mu.Lock()
	if now.Before(w.next) {
		w.suppressed++
		w.mu.Unlock()
		return
	}
	w.next = now.Add(time.Second)
	n := w.suppressed
	w.suppressed = 0
	w.mu.Unlock()
	if n > 0 {
		args = append(args, "similar_lines_suppressed", n)
	}
	l.Warn(msg, args...)
}
