package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

// TestCompactionMergesFlushesAndKeepsEveryAnswer writes 40 flushes, each
// overwriting a sample of the one before (the later must win) and with a
// device that comes and goes, merges them four at a time, and checks that
// the flushes are fewer, no level holds more than four, and every series
// answers as a model of the writes says.
func TestCompactionMergesFlushesAndKeepsEveryAnswer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	db, err := Open(path, Options{fanIn: 4})
	require.NoError(t, err)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	model := map[string]map[int]float64{}
	write := func(dev string, ms int, v float64) ingest.Reading {
		if model[dev] == nil {
			model[dev] = map[int]float64{}
		}
		model[dev][ms] = v
		return reading(dev, at(ms), "v", ingest.Number(v))
	}
	for i := range 40 {
		var rs []ingest.Reading
		for ms := i * 10; ms < i*10+10; ms++ {
			rs = append(rs, write("a", ms, float64(ms)), write("b", ms, float64(-ms)))
		}
		if i > 0 {
			rs = append(rs, write("a", (i-1)*10, 1000+float64(i))) // overwrites the previous flush's
		}
		if i%3 == 0 {
			rs = append(rs, write(fmt.Sprintf("c%d", i%2), i, float64(i)))
		}
		require.NoError(t, db.Write(ctx, rs))
		require.NoError(t, db.Flush(ctx))
	}
	require.NoError(t, db.compact())
	require.Positive(t, db.Merges())

	fl, err := db.flushList()
	require.NoError(t, err)
	require.Less(t, len(fl), 40)
	perLevel := map[byte]int{}
	for i, f := range fl {
		perLevel[f.level]++
		if i > 0 {
			require.LessOrEqual(t, f.level, fl[i-1].level, "levels fall with the sequence")
		}
	}
	for l, n := range perLevel {
		require.LessOrEqual(t, n, 4, "level %d", l)
	}
	require.Greater(t, len(perLevel), 1, "merges of merges happened")

	check := func() {
		for dev, samples := range model {
			got, err := db.Query(dev, "v", at(-1), at(1000))
			require.NoError(t, err)
			require.Len(t, got, len(samples), dev)
			for _, s := range got {
				ms := int(s.Time.Sub(t0) / time.Millisecond)
				require.Equal(t, ingest.Number(samples[ms]), s.Value, "%s at %d ms", dev, ms)
			}
		}
	}
	check()
	require.NoError(t, db.Close())
	db, err = Open(path, Options{})
	require.NoError(t, err)
	defer db.Close()
	check()
}

// TestCompactionKeepsFlushesShort: flushes an hour long are not merged
// beyond MergeSpan, so that retention, which deletes whole flushes, is not
// held up by a flush spanning weeks.
func TestCompactionKeepsFlushesShort(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{fanIn: 2, MergeSpan: 3 * time.Hour})
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 12 {
		require.NoError(t, db.Write(ctx, []ingest.Reading{reading("a", t0.Add(time.Duration(i)*time.Hour), "v", ingest.Number(1)),
			reading("a", t0.Add(time.Duration(i)*time.Hour+59*time.Minute), "v", ingest.Number(2))}))
		require.NoError(t, db.Flush(ctx))
	}
	require.NoError(t, db.compact())
	fl, err := db.flushList()
	require.NoError(t, err)
	for _, f := range fl {
		require.LessOrEqual(t, time.Duration(f.last-f.first), 3*time.Hour, "flush %d", f.seq)
	}
	require.Len(t, fl, 7, "pairs of hours merged (five, and two hours left at level 0), pairs of pairs not")
}

// BenchmarkHistoryDay queries one device's day, written as 20 devices
// reporting every second and flushed every 10 s (8,640 flushes, merged as
// the hub merges them): raw (the latest 10,000 points) and in 1-minute
// windows.
func BenchmarkHistoryDay(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "history.db"), Options{})
	require.NoError(b, err)
	defer db.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	rs := make([]ingest.Reading, 0, 200)
	for flush := range 8640 {
		rs = rs[:0]
		for s := range 10 {
			at := t0.Add(time.Duration(flush*10+s) * time.Second)
			for d := range 20 {
				rs = append(rs, reading(fmt.Sprintf("dev-%02d", d), at, "temperature", ingest.Number(20+float64(s))))
			}
		}
		require.NoError(b, db.Write(ctx, rs))
		require.NoError(b, db.Flush(ctx))
	}
	require.NoError(b, db.compact())
	fl, err := db.flushList()
	require.NoError(b, err)
	b.Logf("%d flushes after merging 8,640", len(fl))
	for _, every := range []time.Duration{0, time.Minute} {
		b.Run(fmt.Sprintf("every=%v", every), func(b *testing.B) {
			q := ingest.HistoryQuery{DeviceID: "dev-07", From: t0, To: t0.Add(24 * time.Hour), Every: every, Agg: "mean"}
			for b.Loop() {
				out, err := db.History(ctx, q)
				require.NoError(b, err)
				require.NotEmpty(b, out[0].Times)
			}
		})
	}
}
