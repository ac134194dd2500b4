package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// rssFileKB is this process's resident file-backed memory (mapped files).
func rssFileKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseDropsTheMergedPagesFromMemory: a merge reads every page of
// the flushes it merges through bbolt's map of the file, which then counts
// as the hub's resident memory (the Pi profile's soak went from 65 to
// 105 MB at its first merge); it gives them back batch by batch.
func TestReleaseDropsTheMergedPagesFromMemory(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{fanIn: 16})
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	t0 := time.Now()
	db.compactMu.Lock() // the compactor waits: this test merges
	defer db.compactMu.Unlock()
	for f := range 17 {
		var rs []ingest.Reading
		for s := range 60 {
			for d := range 500 {
				rs = append(rs, ingest.Reading{DeviceID: fmt.Sprintf("edge-%05d", d), Time: t0.Add(time.Duration(f*60+s) * time.Second),
					Fields: []ingest.Field{{Name: "temperature", Value: ingest.Number(20.5)}, {Name: "humidity", Value: ingest.Number(40)}}})
			}
		}
		require.NoError(t, db.Write(ctx, rs))
		require.NoError(t, db.Flush(ctx))
	}
	db.releasePages() // what the flushes mapped
	before := rssFileKB(t)
	fl, err := db.flushList()
	require.NoError(t, err)
	group := oldestOverfull(fl, 16, db.opts.MergeSpan.Nanoseconds())
	require.Len(t, group, 16)
	require.NoError(t, db.merge(group))
	require.Less(t, rssFileKB(t)-before, 4<<10, "the merge read some 30 MB of flushes and kept them mapped: %d kB before it, %d after", before, rssFileKB(t))
}
