package wal

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// syncBuffer is a log destination safe for the syncer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFullDiskFailsFastAndRecovers runs the log on a real file system that
// fills up (a 1 MiB tmpfs): the sync that meets the full disk fails, the
// log then refuses records at once (ErrFailing) instead of queueing them
// behind failing syncs, says why (Failing, Stats, the log), and takes
// records again by itself once there is room, losing nothing it committed.
func TestFullDiskFailsFastAndRecovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	testenv.SmallFS(t, dir, "size=1m")
	var out syncBuffer
	l, err := Open(dir, Options{}, slog.New(slog.NewTextHandler(&out, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	rec := func(s string) []byte { return append([]byte(s), bytes.Repeat([]byte{'.'}, 8<<10)...) } // more than a page
	_, err = l.Append(context.Background(), rec("a"))
	require.NoError(t, err)
	_, err = l.Failing()
	require.NoError(t, err)

	free := testenv.FillFS(t, dir)
	_, err = l.Append(context.Background(), rec("b"))
	require.ErrorIs(t, err, syscall.ENOSPC, "the sync that meets the full disk")
	since, ferr := l.Failing()
	require.ErrorIs(t, ferr, syscall.ENOSPC)
	require.False(t, since.IsZero())
	require.EqualValues(t, 1, l.Stats().Failed)

	// Fail fast: refused before the sync, for Submit, Append and Enqueue.
	_, err = l.Submit(context.Background(), rec("c"))
	require.ErrorIs(t, err, ErrFailing)
	_, err = l.Append(context.Background(), rec("c"))
	require.ErrorIs(t, err, ErrFailing)
	require.ErrorIs(t, l.Enqueue(context.Background(), rec("c")), ErrFailing)
	require.Contains(t, out.String(), "wal: sync failed")

	free()
	testenv.Eventually(t, 5*time.Second, "the log probes the disk, recovers and says so", func() bool {
		_, err := l.Failing()
		return err == nil && strings.Contains(out.String(), "wal: syncs work again")
	})
	_, err = l.Append(context.Background(), rec("d"))
	require.NoError(t, err)

	var got []string
	for _, r := range readAll(t, l) {
		got = append(got, r[:1])
	}
	require.Equal(t, []string{"a", "d"}, got, "what was committed, nothing of what was refused")
}

// TestFailedRotationIsRetried: when the next segment cannot be created (no
// inode left, a real tmpfs with two), the log does not go on writing to
// the closed segment: it fails its syncs, and once the file system has
// room it creates the segment and syncs again.
func TestFailedRotationIsRetried(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	testenv.SmallFS(t, dir, "size=1m,nr_inodes=2") // the directory and the first segment
	var out syncBuffer
	l, err := Open(dir, Options{SegmentBytes: 4096}, slog.New(slog.NewTextHandler(&out, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	rec := func(s string) []byte { return append([]byte(s), bytes.Repeat([]byte{'.'}, 5000)...) } // fills a segment
	_, err = l.Append(context.Background(), rec("a"))
	require.NoError(t, err, "the rotation after it fails, not the append")
	testenv.Eventually(t, 5*time.Second, "the rotation after the append fails", func() bool {
		return strings.Contains(out.String(), "wal: rotate segment")
	})
	_, err = l.Append(context.Background(), rec("b"))
	require.ErrorIs(t, err, syscall.ENOSPC)
	_, ferr := l.Failing()
	require.Error(t, ferr)

	testenv.RemountFS(t, dir, "nr_inodes=16")
	testenv.Eventually(t, 5*time.Second, "the log recovers", func() bool {
		_, err := l.Failing()
		return err == nil
	})
	_, err = l.Append(context.Background(), rec("c"))
	require.NoError(t, err)
	var got []string
	for _, r := range readAll(t, l) {
		got = append(got, r[:1])
	}
	require.Equal(t, []string{"a", "c"}, got)
	testenv.Eventually(t, 5*time.Second, "segments a, c, and the active one after c", func() bool {
		return l.Stats().Segments == 3 // the rotation after c follows its Append
	})
}

// TestFailingIsLoggedEveryTenSeconds: while the disk stays full the log
// says so when it starts failing and then once every 10 s (not once per
// probe, not never), and once when it recovers. Time is synctest's.
func TestFailingIsLoggedEveryTenSeconds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	testenv.SmallFS(t, dir, "size=1m")
	synctest.Test(t, func(t *testing.T) {
		var out syncBuffer
		l, err := Open(dir, Options{}, slog.New(slog.NewTextHandler(&out, nil)))
		require.NoError(t, err)
		defer l.Close()
		free := testenv.FillFS(t, dir)
		_, err = l.Append(context.Background(), bytes.Repeat([]byte{'.'}, 8<<10))
		require.ErrorIs(t, err, syscall.ENOSPC)

		time.Sleep(25 * time.Second) // 25 probes
		require.Equal(t, 1, strings.Count(out.String(), "wal: sync failed"))
		require.Equal(t, 2, strings.Count(out.String(), "wal: still cannot sync"), "at 10 s and 20 s")
		require.GreaterOrEqual(t, l.Stats().Failed, uint64(20), "the disk is probed every second")

		free()
		time.Sleep(2 * time.Second)
		require.Equal(t, 1, strings.Count(out.String(), "wal: syncs work again"))
		_, err = l.Failing()
		require.NoError(t, err)
	})
}
