package wal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSyncIntervalSpacesSyncsAndStillAnswersAfterTheSync: with
// SyncInterval, the first append syncs at once; appends arriving within
// the interval after it wait for the interval to end and then share one
// sync, and each returns only after that sync, readable.
func TestSyncIntervalSpacesSyncsAndStillAnswersAfterTheSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := open(t, t.TempDir(), Options{MaxBytes: 1 << 20, SyncInterval: 100 * time.Millisecond})
		defer l.Close()
		_, err := l.Append(context.Background(), []byte("first"))
		require.NoError(t, err)
		require.Equal(t, uint64(1), l.Stats().Syncs, "the first append syncs without waiting")

		const n = 10
		var done atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, err := l.Append(context.Background(), fmt.Appendf(nil, "r%d", i))
				require.NoError(t, err)
				done.Add(1)
			})
		}
		synctest.Wait()
		require.Zero(t, done.Load(), "appends within the interval wait for the next sync")
		require.Equal(t, uint64(2), l.Stats().Committed, "and are not readable before it")

		time.Sleep(99 * time.Millisecond)
		synctest.Wait()
		require.Zero(t, done.Load(), "still waiting 1ms before the interval ends")

		time.Sleep(time.Millisecond)
		wg.Wait()
		require.Equal(t, uint64(2), l.Stats().Syncs, "the waiting appends shared one sync")
		require.Len(t, readAll(t, l), n+1)
	})
}

// TestSyncIntervalSyncsWhatItGatheredOnClose: a log closed while appends
// wait for the interval still syncs them: Append's answer is the truth.
func TestSyncIntervalSyncsWhatItGatheredOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		l := open(t, dir, Options{MaxBytes: 1 << 20, SyncInterval: time.Hour})
		_, err := l.Append(context.Background(), []byte("first"))
		require.NoError(t, err)
		var off uint64
		var wg sync.WaitGroup
		wg.Go(func() {
			off, err = l.Append(context.Background(), []byte("second"))
		})
		synctest.Wait()
		require.NoError(t, l.Close())
		wg.Wait()
		require.NoError(t, err, "an append gathered before Close is committed")
		require.Equal(t, uint64(2), off)

		l2 := open(t, dir, Options{MaxBytes: 1 << 20})
		require.Equal(t, []string{"first", "second"}, readAll(t, l2))
		require.NoError(t, l2.Close())
	})
}

// TestWithoutSyncIntervalEveryAppendSyncsAtOnce is the default: no wait.
func TestWithoutSyncIntervalEveryAppendSyncsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := open(t, t.TempDir(), Options{MaxBytes: 1 << 20})
		defer l.Close()
		for i := range 3 {
			_, err := l.Append(context.Background(), fmt.Appendf(nil, "r%d", i))
			require.NoError(t, err)
		}
		require.Equal(t, uint64(3), l.Stats().Syncs)
	})
}
