package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/internal/wal"
)

// Sink stores readings: InfluxDB (ingest/influx) or the embedded store
// (ingest/store).
type Sink interface {
	Write(ctx context.Context, rs []Reading) error
}

// A BufferingSink keeps what Write accepted in memory until Flush (the
// embedded store's head). The writer moves the log's checkpoint past a
// batch only after a Flush that followed its Write, so a crash loses
// nothing: the log replays what the buffer held. It flushes when FlushDue
// says so (checked after each batch and every second) and when it stops.
type BufferingSink interface {
	Sink
	FlushDue() bool
	Flush(ctx context.Context) error
}

// PermanentError marks a write that will never succeed as it is because of
// its content (InfluxDB answering 400, 413 or 422). The writer isolates the
// readings that cause it and moves them to the dead-letter file instead of
// retrying. A sink must not return it for faults of the store itself (a
// missing database, a bad token): those are retried.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryAfterError asks the writer to wait at least After before retrying.
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// WriterConfig configures how readings move from the log to the sink.
type WriterConfig struct {
	// BatchSize is the most readings written in one request.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is how long a partial batch waits for more readings.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// RetryMin and RetryMax bound the exponential backoff between retries;
	// the wait, jitter included, is never longer than RetryMax, so a store
	// that comes back is written to within RetryMax.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// DrainTimeout bounds the final flush on shutdown.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// InFlight is the most batches being written at once. The checkpoint
	// still advances in log order: past a batch only once it and every
	// batch before it are stored.
	InFlight int `yaml:"in_flight"`
}

// DefaultWriterConfig returns the defaults: 5,000 readings or 1 s, four
// batches in flight.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{BatchSize: 5000, FlushInterval: time.Second, RetryMin: 100 * time.Millisecond,
		RetryMax: 5 * time.Second, DrainTimeout: 5 * time.Second, InFlight: 4}
}

// Validate checks the values.
func (c WriterConfig) Validate() error {
	switch {
	case c.BatchSize < 1:
		return errors.New("writer.batch_size must be at least 1")
	case c.InFlight < 1:
		return errors.New("writer.in_flight must be at least 1")
	case c.FlushInterval < 0:
		return errors.New("writer.flush_interval must not be negative")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("writer.retry_min must be positive and at most writer.retry_max")
	}
	return nil
}

// WriterMetrics are the writer's metrics.
type WriterMetrics struct {
	Written     prometheus.Counter
	Batches     prometheus.Counter
	Retries     prometheus.Counter
	DeadLetters prometheus.Counter
	// BatchLatency observes each successful store write, in seconds.
	BatchLatency prometheus.Observer
	// Lag is the age of the oldest reading of the last written batch.
	Lag        prometheus.Gauge
	ReadErrors prometheus.Counter
}

// NewWriterMetrics registers the writer's metrics with r (nil: unregistered).
func NewWriterMetrics(r prometheus.Registerer) *WriterMetrics {
	return NewWriterMetricsNamed(r, "telehub_store")
}

// NewWriterMetricsNamed registers a writer's metrics under a name prefix,
// for a second writer such as the local window (telehub_local_store).
func NewWriterMetricsNamed(r prometheus.Registerer, prefix string) *WriterMetrics {
	f := promauto.With(r)
	counter := func(name, help string) prometheus.Counter {
		return f.NewCounter(prometheus.CounterOpts{Name: prefix + name, Help: help})
	}
	return &WriterMetrics{
		Written:     counter("_readings_written_total", "Readings confirmed by the store."),
		Batches:     counter("_batches_total", "Batches confirmed by the store."),
		Retries:     counter("_retries_total", "Store writes retried after an error."),
		DeadLetters: counter("_dead_letters_total", "Readings the store refused for good, moved to the dead-letter file."),
		BatchLatency: f.NewHistogram(prometheus.HistogramOpts{Name: prefix + "_batch_latency_seconds",
			Help:    "Duration of successful store writes, one per batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}), // 1 ms to 16 s
		Lag: f.NewGauge(prometheus.GaugeOpts{Name: prefix + "_lag_seconds",
			Help: "Age of the oldest reading in the last written batch, by its receive order."}),
		ReadErrors: counter("_log_read_errors_total", "Failures to read the durable log (corruption)."),
	}
}

// Writer moves readings from the durable log to a sink in batches, in log
// order, and advances the log's checkpoint only after the sink confirmed.
type Writer struct {
	wal      *wal.Log
	sink     Sink
	cfg      WriterConfig
	metrics  *WriterMetrics
	logger   *slog.Logger
	deadPath string
	consumer string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	drain  chan struct{}
}

// NewWriter returns a writer; deadLetterPath is the file (JSON lines) that
// receives readings the sink refuses for good.
func NewWriter(journal *wal.Log, sink Sink, cfg WriterConfig, m *WriterMetrics, deadLetterPath string, logger *slog.Logger) *Writer {
	return &Writer{consumer: wal.DefaultConsumer, wal: journal, sink: sink, cfg: cfg, metrics: m, logger: logger, deadPath: deadLetterPath, drain: make(chan struct{})}
}

// As makes the writer read the log as the named consumer (default "store"),
// with its own checkpoint; call before Start.
func (w *Writer) As(consumer string) *Writer {
	w.consumer = consumer
	return w
}

// Start runs the writer until Stop.
func (w *Writer) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Go(func() { w.run(ctx) })
}

// Stop writes what the log holds (bounded by DrainTimeout), then stops. Safe
// to call twice.
func (w *Writer) Stop() {
	w.once.Do(func() {
		close(w.drain)
		if w.cancel == nil {
			return
		}
		t := time.AfterFunc(w.cfg.DrainTimeout, w.cancel)
		w.wg.Wait()
		t.Stop()
		w.cancel()
	})
}

func (w *Writer) run(ctx context.Context) {
	rd := w.wal.Consumer(w.consumer)
	defer rd.Close()
	// Batches go to the sink on their own goroutines, at most InFlight at
	// once; checkpointInOrder takes them in log order and advances the
	// checkpoint. The channel holds InFlight-1 and checkpointInOrder the one it
	// waits for, so filling the next batch overlaps the writes.
	flights := make(chan *flight, w.cfg.InFlight-1)
	var wg sync.WaitGroup
	wg.Go(func() { w.checkpointInOrder(rd, flights) })
	defer func() {
		close(flights)
		wg.Wait()
	}()
	readFailures := 0
	for {
		draining := false
		select {
		case <-w.drain:
			draining = true
		default:
		}
		if !rd.Available() {
			if draining {
				return
			}
			ch := rd.Changed()
			if !rd.Available() {
				select {
				case <-ch:
				case <-w.drain:
				case <-ctx.Done():
					return
				}
			}
			continue
		}
		batch, err := w.fill(ctx, rd, make([]Reading, 0, min(w.cfg.BatchSize, 1024)))
		if err != nil && len(batch) == 0 {
			if !w.readFailed(ctx, rd, err, &readFailures) {
				return
			}
			continue
		}
		readFailures = 0
		if len(batch) == 0 {
			continue
		}
		f := &flight{batch: batch, end: rd.Next(), start: time.Now(), done: make(chan error, 1)}
		select {
		case flights <- f:
		case <-ctx.Done():
			return // the log keeps the batch for the next start
		}
		wg.Go(func() { f.done <- w.write(ctx, f.batch) })
	}
}

// flight is a batch being written: the log offset after it, and the
// outcome of its write.
type flight struct {
	batch []Reading
	end   uint64
	start time.Time
	done  chan error
}

// checkpointInOrder waits for each batch in log order and moves the checkpoint
// past it (for a BufferingSink, past the batches its Flush made durable).
// After a batch that was not stored (the context ended), it moves the
// checkpoint no further: the log keeps the rest for the next start.
func (w *Writer) checkpointInOrder(rd *wal.Reader, flights <-chan *flight) {
	checkpoint := func(end uint64) {
		if err := rd.Checkpoint(end); err != nil {
			w.logger.Warn("write log checkpoint", "err", err)
		}
	}
	buf, buffering := w.sink.(BufferingSink)
	var (
		held    uint64 // the log offset after the last batch in the sink's buffer
		holding bool
		poll    *time.Ticker
		tick    <-chan time.Time
	)
	if buffering {
		poll = time.NewTicker(flushPoll)
		defer poll.Stop()
	}
	flush := func() {
		if err := buf.Flush(context.Background()); err != nil {
			w.metrics.Retries.Inc()
			w.logger.Warn("store flush failed, retrying", "err", err)
			return
		}
		checkpoint(held)
		holding, tick = false, nil
	}
	stopped := false
	for {
		select {
		case <-tick:
			if buf.FlushDue() {
				flush()
			}
			continue
		case f, ok := <-flights:
			if !ok {
				if holding {
					flush()
				}
				return
			}
			if err := <-f.done; err != nil || stopped {
				stopped = true
				continue
			}
			w.metrics.BatchLatency.Observe(time.Since(f.start).Seconds())
			w.metrics.Lag.Set(time.Since(f.batch[0].Time).Seconds())
			w.metrics.Written.Add(float64(len(f.batch)))
			w.metrics.Batches.Inc()
			if !buffering {
				checkpoint(f.end)
				continue
			}
			held, holding, tick = f.end, true, poll.C
			if buf.FlushDue() {
				flush()
			}
		}
	}
}

// flushPoll is how often the writer asks a BufferingSink whether its
// buffer is due while it holds readings.
const flushPoll = time.Second

// readFailed handles a record that cannot be read: retried with back-off
// (the reader reopens its file), and after three failures in a row the rest
// of its segment is skipped, loudly, so that one corrupt record cannot stop
// the hub for good. False when ctx ended.
func (w *Writer) readFailed(ctx context.Context, rd *wal.Reader, err error, failures *int) bool {
	w.metrics.ReadErrors.Inc()
	*failures++
	if *failures >= 3 {
		if n := rd.SkipSegment(); n > 0 {
			w.logger.Error("durable log unreadable: skipped the rest of a segment, readings lost", "records", n, "err", err)
			*failures = 0
			return true
		}
	}
	w.logger.Error("read durable log, retrying", "err", err, "attempt", *failures)
	rd.Close()
	select {
	case <-time.After(w.cfg.RetryMin << min(*failures, 8)):
		return true
	case <-ctx.Done():
		return false
	}
}

// fill reads records into batch until BatchSize readings or until nothing new
// arrived for FlushInterval.
func (w *Writer) fill(ctx context.Context, rd *wal.Reader, batch []Reading) ([]Reading, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(batch) < w.cfg.BatchSize {
		// Never split a record across batches: the checkpoint is per record.
		recs, first, err := rd.Read(max(1, (w.cfg.BatchSize-len(batch))/8))
		if err != nil {
			return batch, err
		}
		for i, rec := range recs {
			batch, err = DecodeRecord(batch, rec)
			if err != nil {
				w.logger.Error("skip corrupt log record", "offset", first+uint64(i), "err", err)
			}
		}
		if len(recs) > 0 {
			continue
		}
		if w.cfg.FlushInterval == 0 {
			break
		}
		ch := rd.Changed()
		if rd.Available() {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(w.cfg.FlushInterval)
		}
		select {
		case <-ch:
			continue
		case <-timer.C:
		case <-w.drain:
		case <-ctx.Done():
		}
		return batch, nil
	}
	return batch, nil
}

// write stores the batch, retrying transient errors with backoff until ctx
// ends, and dead-lettering readings refused for good.
func (w *Writer) write(ctx context.Context, batch []Reading) error {
	backoff := w.cfg.RetryMin
	for {
		err := w.sink.Write(ctx, batch)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			return w.isolate(ctx, batch, err)
		}
		w.metrics.Retries.Inc()
		// Jitter in the upper half: the wait is between backoff/2 and
		// backoff, so never longer than RetryMax.
		wait := backoff - rand.N(backoff/2+1)
		var ra *RetryAfterError
		if errors.As(err, &ra) && ra.After > wait {
			wait = ra.After
		}
		w.logger.Warn("store write failed, retrying", "err", err, "readings", len(batch), "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, w.cfg.RetryMax)
	}
}

// isolate halves a refused batch until the readings that cause the refusal
// stand alone, writes the others and dead-letters those.
func (w *Writer) isolate(ctx context.Context, batch []Reading, err error) error {
	if len(batch) == 1 {
		w.deadLetter(batch[0], err)
		return nil
	}
	half := len(batch) / 2
	for _, part := range [][]Reading{batch[:half], batch[half:]} {
		if err := w.write(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

type deadLetter struct {
	Reason   string         `json:"reason"`
	DeviceID string         `json:"device_id"`
	Type     string         `json:"device_type"`
	Time     time.Time      `json:"ts"`
	Fields   map[string]any `json:"fields"`
}

func (w *Writer) deadLetter(r Reading, reason error) {
	w.metrics.DeadLetters.Inc()
	w.logger.Error("store refused reading, moved to dead letters", "device_id", r.DeviceID, "err", reason)
	fields := make(map[string]any, len(r.Fields))
	for _, f := range r.Fields {
		fields[f.Name] = f.Value.Any()
	}
	line, _ := json.Marshal(deadLetter{Reason: reason.Error(), DeviceID: r.DeviceID, Type: r.DeviceType, Time: r.Time, Fields: fields})
	f, err := os.OpenFile(w.deadPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		w.logger.Error("open dead-letter file", "err", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		w.logger.Error("write dead-letter file", "err", fmt.Errorf("%s: %w", w.deadPath, err))
	}
}
