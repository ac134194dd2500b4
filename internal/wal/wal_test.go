package wal

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func open(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func readAll(t testing.TB, l *Log) []string {
	t.Helper()
	r := l.NewReader()
	defer r.Close()
	var out []string
	for r.Available() {
		recs, _, err := r.Read(100)
		require.NoError(t, err)
		for _, rec := range recs {
			out = append(out, string(rec))
		}
	}
	return out
}

func TestConcurrentAppendsAreReadInOffsetOrder(t *testing.T) {
	l := open(t, t.TempDir(), Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	const writers, each = 8, 50
	offsets := make([][]uint64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				off, err := l.Append(context.Background(), fmt.Appendf(nil, "w%d-%d", w, i))
				require.NoError(t, err)
				offsets[w] = append(offsets[w], off)
			}
		})
	}
	wg.Wait()
	got := readAll(t, l)
	require.Len(t, got, writers*each)
	// Each writer's records appear in its own order, at the offsets it was told.
	for w := range writers {
		for i, off := range offsets[w] {
			require.Equal(t, fmt.Sprintf("w%d-%d", w, i), got[off-1])
		}
	}
	require.Greater(t, l.Stats().Segments, 1, "small segments must rotate")
}

func TestReopenResumesAfterCheckpointAndCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentBytes: 4096}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	for i := range 300 {
		_, err := l.Append(context.Background(), fmt.Appendf(nil, "rec-%03d", i))
		require.NoError(t, err)
	}
	r := l.NewReader()
	recs, first, err := r.Read(100)
	require.NoError(t, err)
	require.Equal(t, uint64(1), first)
	require.Len(t, recs, 100)
	require.NoError(t, l.Checkpoint(r.Next()))
	r.Close()
	require.NoError(t, l.Close())

	// A crash mid-write leaves half a record at the end of the active segment.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{200, 0, 0, 0, 1, 2, 3})
	require.NoError(t, err)
	require.NoError(t, f.Close())

	l2 := open(t, dir, Options{SegmentBytes: 4096})
	got := readAll(t, l2)
	require.Len(t, got, 200)
	require.Equal(t, "rec-100", got[0])
	require.Equal(t, "rec-299", got[199])
	off, err := l2.Append(context.Background(), []byte("after"))
	require.NoError(t, err)
	require.Equal(t, uint64(301), off)
	got = readAll(t, l2)
	require.Equal(t, "after", got[len(got)-1])
}

func TestFullLogRefusesUntilConsumed(t *testing.T) {
	l := open(t, t.TempDir(), Options{MaxBytes: 16 << 10})
	rec := make([]byte, 1000)
	var err error
	n := 0
	for ; n < 1000; n++ {
		if _, err = l.Append(context.Background(), rec); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrFull)
	require.Greater(t, n, 10)
	r := l.NewReader()
	defer r.Close()
	for r.Available() {
		_, _, err := r.Read(64)
		require.NoError(t, err)
	}
	require.NoError(t, l.Checkpoint(r.Next()))
	require.False(t, l.Full(), "consumed segments are deleted")
	_, err = l.Append(context.Background(), rec)
	require.NoError(t, err)
}

func TestReaderWaitWakesOnAppend(t *testing.T) {
	l := open(t, t.TempDir(), Options{})
	r := l.NewReader()
	defer r.Close()
	done := make(chan error, 1)
	go func() { done <- r.Wait(context.Background()) }()
	_, err := l.Append(context.Background(), []byte("x"))
	require.NoError(t, err)
	require.NoError(t, <-done)
	recs, _, err := r.Read(10)
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("x")}, recs)
}

func TestAppendAfterCloseFails(t *testing.T) {
	l := open(t, t.TempDir(), Options{})
	require.NoError(t, l.Close())
	require.NoError(t, l.Close())
	_, err := l.Append(context.Background(), []byte("x"))
	require.ErrorIs(t, err, ErrClosed)
}

func BenchmarkAppendParallel(b *testing.B) {
	l := open(b, b.TempDir(), Options{})
	rec := make([]byte, 120)
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(context.Background(), rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestConsumersKeepSegmentsUntilTheSlowestIsDone(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4096, MaxBytes: 64 << 10, Consumers: []string{"store", "forward"}}
	l, err := Open(dir, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	store, fwd := l.NewReader(), l.Consumer("forward")
	rec := make([]byte, 500)
	for range 40 {
		_, err := l.Append(context.Background(), rec)
		require.NoError(t, err)
	}
	drain := func(r *Reader) {
		for r.Available() {
			_, _, err := r.Read(100)
			require.NoError(t, err)
		}
		require.NoError(t, r.Checkpoint(r.Next()))
	}
	drain(store)
	segs := l.Stats().Segments
	require.Greater(t, segs, 2)
	require.Equal(t, uint64(1), l.Consumed(), "the forwarder has read nothing")
	drain(fwd)
	require.Equal(t, uint64(41), l.Consumed())
	require.Less(t, l.Stats().Segments, segs, "segments go once both consumers are past")

	// A stalled consumer fills the log: backpressure, not loss.
	for {
		if _, err = l.Append(context.Background(), rec); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrFull)
	drain(store)
	require.True(t, l.Full(), "the forwarder still holds the log")
	store.Close()
	fwd.Close()
	require.NoError(t, l.Close())

	// Each consumer resumes at its own checkpoint after a restart.
	l2 := open(t, dir, opts)
	s2, f2 := l2.NewReader(), l2.Consumer("forward")
	require.False(t, s2.Available(), "the store consumed everything")
	require.Equal(t, uint64(41), f2.Next())
	require.True(t, f2.Available())
	s2.Close()
	f2.Close()
	require.NoError(t, l2.Close())

	// Turning the forwarder off frees the log it held.
	l3 := open(t, dir, Options{SegmentBytes: 4096, MaxBytes: 64 << 10})
	require.False(t, l3.Full())
	require.NoFileExists(t, filepath.Join(dir, "checkpoint.forward"))
}

func TestEnqueueIsCommittedWithoutWaiting(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, l.Enqueue(context.Background(), fmt.Appendf(nil, "q0-%d", i)))
	}
	// An Append after them is committed after them: once it returns, all are durable.
	off, err := l.Append(context.Background(), []byte("q1"))
	require.NoError(t, err)
	require.Equal(t, uint64(101), off)
	for i := range 50 {
		require.NoError(t, l.Enqueue(context.Background(), fmt.Appendf(nil, "late-%d", i)))
	}
	require.NoError(t, l.Close(), "closing syncs what is queued")
	require.ErrorIs(t, l.Enqueue(context.Background(), []byte("x")), ErrClosed)

	l2 := open(t, dir, Options{})
	got := readAll(t, l2)
	require.Len(t, got, 151)
	require.Equal(t, "q0-0", got[0])
	require.Equal(t, "q1", got[100])
	require.Equal(t, "late-49", got[150])
}

// BenchmarkAppendParallelNoSync is the cost of the hand-off to the sync
// itself: 64 appenders, no fsync.
func BenchmarkAppendParallelNoSync(b *testing.B) {
	l := open(b, b.TempDir(), Options{NoSync: true, MaxBytes: 8 << 30})
	rec := make([]byte, 120)
	b.SetParallelism(64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(context.Background(), rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
