package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// flakySink is a store that is down for its first calls and refuses, for
// good, any batch containing a field named "poison" (as InfluxDB refuses a
// field type conflict).
type flakySink struct {
	mu      sync.Mutex
	down    int
	written []float64
}

func (s *flakySink) Write(_ context.Context, rs []Reading) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down > 0 {
		s.down--
		return errors.New("connection refused")
	}
	for _, r := range rs {
		if r.Fields[0].Name == "poison" {
			return &PermanentError{Err: errors.New("field type conflict")}
		}
	}
	for _, r := range rs {
		s.written = append(s.written, r.Fields[0].Value.Num)
	}
	return nil
}

func (s *flakySink) values() []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]float64(nil), s.written...)
}

func TestWriterRetriesIsolatesPoisonAndCheckpoints(t *testing.T) {
	dir, logger, l := openTestLog(t)

	var want []float64
	ts := time.Unix(1700000000, 0)
	for i := range 50 {
		name := "v"
		if i == 17 || i == 33 {
			name = "poison"
		} else {
			want = append(want, float64(i))
		}
		rec := AppendRecord(nil, "d1", "thermostat", []Point{{Time: ts.Add(time.Duration(i) * time.Second),
			Fields: []Field{{Name: name, Value: Number(float64(i))}}}})
		_, err := l.Append(context.Background(), rec)
		require.NoError(t, err)
	}

	sink := &flakySink{down: 2}
	cfg := DefaultWriterConfig()
	cfg.BatchSize, cfg.FlushInterval, cfg.RetryMin = 8, 0, time.Millisecond
	cfg.InFlight = 1 // one batch at a time: the sink sees the log's order
	reg := prometheus.NewRegistry()
	m := NewWriterMetrics(reg)
	dead := filepath.Join(dir, "dead.jsonl")
	w := NewWriter(l, sink, cfg, m, dead, logger)
	w.Start(context.Background())
	defer w.Stop()

	testenv.Eventually(t, 10*time.Second, "good readings written", func() bool { return len(sink.values()) >= len(want) })
	require.Equal(t, want, sink.values(), "all good readings, in order, once")
	require.InDelta(t, 2, testutil.ToFloat64(m.DeadLetters), 0)
	require.GreaterOrEqual(t, testutil.ToFloat64(m.Retries), 2.0)
	b, err := os.ReadFile(dead)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], `"reason":"permanent: field type conflict"`)
	require.Contains(t, lines[0], `"poison":17`)
	testenv.Eventually(t, 10*time.Second, "checkpoint advanced", func() bool { return l.Consumed() == 51 })
	require.Equal(t, uint64(51), l.Consumed(), "checkpoint past every record")
}

// gatedSink holds the write of the batch holding reading 0 until released,
// and lets every other batch through.
type gatedSink struct {
	release chan struct{}
	mu      sync.Mutex
	written map[float64]int
}

func (s *gatedSink) Write(ctx context.Context, rs []Reading) error {
	for _, r := range rs {
		if r.Fields[0].Value.Num == 0 {
			select {
			case <-s.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		s.written[r.Fields[0].Value.Num]++
	}
	return nil
}

func (s *gatedSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.written)
}

// openTestLog opens a durable log in a fresh directory, closed when the
// test ends.
func openTestLog(t *testing.T) (dir string, logger *slog.Logger, l *wal.Log) {
	t.Helper()
	dir = t.TempDir()
	logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := wal.Open(filepath.Join(dir, "log"), wal.Options{}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return dir, logger, l
}

// appendValues logs readings of device d1 with v = from ... from+n-1, one
// a second.
func appendValues(t *testing.T, l *wal.Log, from, n int) {
	t.Helper()
	ts := time.Unix(1700000000, 0)
	for i := from; i < from+n; i++ {
		rec := AppendRecord(nil, "d1", "thermostat", []Point{{Time: ts.Add(time.Duration(i) * time.Second),
			Fields: []Field{{Name: "v", Value: Number(float64(i))}}}})
		_, err := l.Append(context.Background(), rec)
		require.NoError(t, err)
	}
}

func TestWriterInFlightCheckpointsOnlyAConfirmedPrefix(t *testing.T) {
	dir, logger, l := openTestLog(t)
	appendValues(t, l, 0, 32)
	start := l.Consumed()
	sink := &gatedSink{release: make(chan struct{}), written: map[float64]int{}}
	cfg := DefaultWriterConfig()
	cfg.BatchSize, cfg.FlushInterval, cfg.InFlight = 8, 0, 4
	m := NewWriterMetrics(prometheus.NewRegistry())
	w := NewWriter(l, sink, cfg, m, filepath.Join(dir, "dead.jsonl"), logger)
	w.Start(context.Background())
	defer w.Stop()

	// The three later batches are stored while the first is held...
	testenv.Eventually(t, 10*time.Second, "later batches written", func() bool { return sink.count() == 24 })
	// ...but the checkpoint stays before the first, which is not stored.
	require.Equal(t, start, l.Consumed(), "no checkpoint past an unconfirmed batch")
	require.Zero(t, testutil.ToFloat64(m.Written))

	close(sink.release)
	testenv.Eventually(t, 10*time.Second, "checkpoint past every batch", func() bool { return l.Consumed() == start+32 })
	require.Equal(t, 32, sink.count())
	for v, n := range sink.written {
		require.Equal(t, 1, n, "reading %v written once", v)
	}
	require.InDelta(t, 32, testutil.ToFloat64(m.Written), 0)
}

func TestRecordRoundTrip(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	pts := []Point{{Time: ts, Fields: []Field{{"a", Number(-1.25)}, {"b", Bool(true)}, {"c", String("x\"y")}}},
		{Time: ts.Add(time.Second), Fields: []Field{{"a", Number(2)}}}}
	rs, err := DecodeRecord(nil, AppendRecord(nil, "dev", "thermostat", pts))
	require.NoError(t, err)
	require.Equal(t, []Reading{{DeviceID: "dev", DeviceType: "thermostat", Time: ts, Fields: pts[0].Fields},
		{DeviceID: "dev", DeviceType: "thermostat", Time: ts.Add(time.Second), Fields: pts[1].Fields}}, rs)
	rec := AppendRecord(nil, "dev", "thermostat", pts)
	for i := range rec {
		_, err := DecodeRecord(nil, rec[:i])
		require.Error(t, err, "truncated at %d", i)
	}
}

// A corrupt record does not stop the writer for good: after retries the rest
// of its segment is skipped (and counted), and later readings flow on.
func TestWriterSkipsACorruptSegment(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := wal.Open(filepath.Join(dir, "log"), wal.Options{SegmentBytes: 4096}, logger)
	require.NoError(t, err)
	ts := time.Unix(1700000000, 0)
	for i := range 600 {
		rec := AppendRecord(nil, "d1", "t", []Point{{Time: ts.Add(time.Duration(i) * time.Second), Fields: []Field{{Name: "v", Value: Number(float64(i))}}}})
		_, err := l.Append(context.Background(), rec)
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	segs, _ := filepath.Glob(filepath.Join(dir, "log", "*.wal"))
	require.Greater(t, len(segs), 2)
	b, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff // a flipped byte mid-segment: a checksum mismatch
	require.NoError(t, os.WriteFile(segs[0], b, 0o640))

	l, err = wal.Open(filepath.Join(dir, "log"), wal.Options{SegmentBytes: 4096}, logger)
	require.NoError(t, err)
	defer l.Close()
	sink := &flakySink{}
	cfg := DefaultWriterConfig()
	cfg.FlushInterval, cfg.RetryMin = 0, time.Millisecond
	m := NewWriterMetrics(prometheus.NewRegistry())
	w := NewWriter(l, sink, cfg, m, filepath.Join(dir, "dead.jsonl"), logger)
	w.Start(context.Background())
	defer w.Stop()
	testenv.Eventually(t, 10*time.Second, "the last reading is written", func() bool {
		v := sink.values()
		return len(v) > 0 && v[len(v)-1] == 599
	})
	require.GreaterOrEqual(t, testutil.ToFloat64(m.ReadErrors), 3.0)
	v := sink.values()
	require.Less(t, len(v), 600, "the corrupt segment's tail is skipped")
	require.Greater(t, len(v), 300, "the segments after it are written")
}

// bufferingSink holds what it is written until Flush, as the embedded
// store's head does.
type bufferingSink struct {
	mu               sync.Mutex
	buffered, stored []float64
	due              bool
}

func (s *bufferingSink) Write(_ context.Context, rs []Reading) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		s.buffered = append(s.buffered, r.Fields[0].Value.Num)
	}
	return nil
}

func (s *bufferingSink) FlushDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.due
}

func (s *bufferingSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stored, s.buffered = append(s.stored, s.buffered...), nil
	return nil
}

func (s *bufferingSink) counts() (buffered, stored int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buffered), len(s.stored)
}

func (s *bufferingSink) setDue(due bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.due = due
}

func TestWriterCheckpointsABufferingSinkOnlyAfterItsFlush(t *testing.T) {
	dir, logger, l := openTestLog(t)
	appendValues(t, l, 0, 32)
	start := l.Consumed()
	sink := &bufferingSink{}
	cfg := DefaultWriterConfig()
	cfg.BatchSize, cfg.FlushInterval, cfg.InFlight = 8, 0, 2
	w := NewWriter(l, sink, cfg, NewWriterMetrics(prometheus.NewRegistry()), filepath.Join(dir, "dead.jsonl"), logger)
	w.Start(context.Background())
	defer w.Stop()

	testenv.Eventually(t, 10*time.Second, "every batch in the sink's buffer", func() bool { b, _ := sink.counts(); return b == 32 })
	require.Equal(t, start, l.Consumed(), "no checkpoint past readings that are only buffered")

	sink.setDue(true)
	testenv.Eventually(t, 10*time.Second, "flushed and checkpointed", func() bool { return l.Consumed() == start+32 })
	_, stored := sink.counts()
	require.Equal(t, 32, stored)

	sink.setDue(false)
	appendValues(t, l, 32, 8)
	testenv.Eventually(t, 10*time.Second, "the next batch buffered", func() bool { b, _ := sink.counts(); return b == 8 })
	require.Equal(t, start+32, l.Consumed())
	w.Stop()
	require.Equal(t, start+40, l.Consumed(), "stopping flushes what the sink buffers, then checkpoints")
	_, stored = sink.counts()
	require.Equal(t, 40, stored)
}
