package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/ingest"
)

func TestWriteQueryKeepsTypesAndOverwritesReplays(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := []ingest.Reading{
		{DeviceID: "d1", DeviceType: "thermostat", Time: t0, Fields: []ingest.Field{
			{Name: "heating", Value: ingest.Bool(true)}, {Name: "mode", Value: ingest.String("heat")}, {Name: "t", Value: ingest.Number(-1.5)}}},
		{DeviceID: "d1", Time: t0.Add(time.Second), Fields: []ingest.Field{{Name: "t", Value: ingest.Number(2)}}},
		{DeviceID: "d2", Time: t0.Add(-time.Hour), Fields: []ingest.Field{{Name: "t", Value: ingest.Number(9)}}},
	}
	require.NoError(t, db.Write(context.Background(), rs))
	require.NoError(t, db.Write(context.Background(), rs[:2]), "a replay")

	got, err := db.Query("d1", "t", t0.Add(-time.Minute), t0.Add(time.Minute))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.Number(-1.5)}, {t0.Add(time.Second), ingest.Number(2)}}, got)

	got, err = db.Query("d1", "t", t0.Add(time.Millisecond), t0.Add(time.Minute))
	require.NoError(t, err)
	require.Len(t, got, 1, "from is inclusive, earlier samples excluded")

	got, err = db.Query("d1", "mode", t0, t0.Add(time.Nanosecond))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.String("heat")}}, got)
	got, err = db.Query("d1", "heating", t0, t0.Add(time.Nanosecond))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.Bool(true)}}, got)

	got, err = db.Query("d2", "t", t0.Add(-2*time.Hour), t0)
	require.NoError(t, err)
	require.Len(t, got, 1)
	got, err = db.Query("nobody", "t", t0.Add(-2*time.Hour), t0)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestDeleteBeforeDropsWholeOldFlushes(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 { // a flush an hour
		var rs []ingest.Reading
		for _, dev := range []string{"a", "b"} {
			rs = append(rs, ingest.Reading{DeviceID: dev, Time: t0.Add(time.Duration(i) * time.Hour), Fields: []ingest.Field{
				{Name: "t", Value: ingest.Number(float64(i))}, {Name: "u", Value: ingest.Bool(true)}}})
		}
		require.NoError(t, db.Write(ctx, rs))
		require.NoError(t, db.Flush(ctx))
	}
	// A late reading and a current one in one flush: it straddles the cutoff.
	require.NoError(t, db.Write(ctx, []ingest.Reading{reading("c", t0.Add(3*time.Hour), "t", ingest.Number(3)),
		reading("c", t0.Add(5*time.Hour), "t", ingest.Number(5))}))
	n, err := db.DeleteBefore(t0.Add(4 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2*2*4, n, "the four oldest flushes of a and b")
	for _, dev := range []string{"a", "b"} {
		for _, f := range []string{"t", "u"} {
			got, err := db.Query(dev, f, t0.Add(-time.Hour), t0.Add(24*time.Hour))
			require.NoError(t, err)
			require.Len(t, got, 6)
			require.Equal(t, t0.Add(4*time.Hour), got[0].Time)
		}
	}
	got, err := db.Query("c", "t", t0, t0.Add(24*time.Hour))
	require.NoError(t, err)
	require.Len(t, got, 2, "a flush that straddles the cutoff stays whole")

	n, err = db.DeleteBefore(t0.Add(6 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2*2*2+2, n, "two more hours of a and b, and c's flush once all of it is old")
}

func reading(dev string, t time.Time, field string, v ingest.Value) ingest.Reading {
	return ingest.Reading{DeviceID: dev, Time: t, Fields: []ingest.Field{{Name: field, Value: v}}}
}

func TestHeadFlushesMergeLaterWinsAndSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	db, err := Open(path, Options{})
	require.NoError(t, err)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	// Out of order and twice within the head: sorted, the last one wins.
	require.NoError(t, db.Write(ctx, []ingest.Reading{reading("d", at(3), "v", ingest.Number(3)),
		reading("d", at(1), "v", ingest.Number(1)), reading("d", at(2), "v", ingest.String("two")),
		reading("d", at(1), "v", ingest.Number(10))}))
	require.Positive(t, db.HeadBytes())
	want := []Sample{{at(1), ingest.Number(10)}, {at(2), ingest.String("two")}, {at(3), ingest.Number(3)}}
	got, err := db.Query("d", "v", at(0), at(10))
	require.NoError(t, err)
	require.Equal(t, want, got, "the head answers before any flush")

	require.NoError(t, db.Flush(ctx))
	require.Zero(t, db.HeadBytes())
	require.Equal(t, uint64(1), db.Flushes())
	got, err = db.Query("d", "v", at(0), at(10))
	require.NoError(t, err)
	require.Equal(t, want, got, "the flush answers the same")

	// A replay overlapping the flush, and a new value for a flushed time,
	// partly flushed, partly still in the head.
	require.NoError(t, db.Write(ctx, []ingest.Reading{reading("d", at(2), "v", ingest.Bool(true)),
		reading("d", at(3), "v", ingest.Number(3)), reading("d", at(4), "v", ingest.Number(4))}))
	require.NoError(t, db.Flush(ctx))
	require.NoError(t, db.Write(ctx, []ingest.Reading{reading("d", at(4), "v", ingest.Number(40)), reading("d", at(5), "v", ingest.Number(5))}))
	want = []Sample{{at(1), ingest.Number(10)}, {at(2), ingest.Bool(true)}, {at(3), ingest.Number(3)},
		{at(4), ingest.Number(40)}, {at(5), ingest.Number(5)}}
	got, err = db.Query("d", "v", at(0), at(10))
	require.NoError(t, err)
	require.Equal(t, want, got)
	got, err = db.Query("d", "v", at(2), at(4))
	require.NoError(t, err)
	require.Equal(t, want[1:3], got, "from inclusive, to exclusive")

	require.NoError(t, db.Close(), "close flushes the head")
	db, err = Open(path, Options{})
	require.NoError(t, err)
	defer db.Close()
	got, err = db.Query("d", "v", at(0), at(10))
	require.NoError(t, err)
	require.Equal(t, want, got)
	hist, err := db.History(ctx, ingest.HistoryQuery{DeviceID: "d", From: at(0), To: at(10)})
	require.NoError(t, err)
	require.Len(t, hist, 1, "the fields a device had are remembered")
	require.Equal(t, "v", hist[0].Field)
	require.Len(t, hist[0].Times, 5)
}

func TestFlushDue(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{FlushBytes: 1000, FlushEvery: time.Hour})
	require.NoError(t, err)
	defer db.Close()
	require.False(t, db.FlushDue(), "nothing to flush")
	t0 := time.Unix(1700000000, 0)
	require.NoError(t, db.Write(context.Background(), []ingest.Reading{reading("d", t0, "v", ingest.Number(1))}))
	require.False(t, db.FlushDue(), "small and young")
	var rs []ingest.Reading
	for i := range 100 {
		rs = append(rs, reading("d", t0.Add(time.Duration(i+1)*time.Second), "v", ingest.Number(float64(i))))
	}
	require.NoError(t, db.Write(context.Background(), rs))
	require.True(t, db.FlushDue(), "over FlushBytes")
}

// TestFlushWritesFewPages checks the point of the layout: a flush of 1,000
// devices appends its chunks at the end of the file instead of copying a
// page per device, as writing each reading under its series did.
func TestFlushWritesFewPages(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	t0 := time.Unix(1700000000, 0)
	for round := range 5 {
		var rs []ingest.Reading
		for d := range 1000 {
			rs = append(rs, ingest.Reading{DeviceID: fmt.Sprintf("device-%04d", d), Time: t0.Add(time.Duration(round) * time.Second),
				Fields: []ingest.Field{{Name: "humidity", Value: ingest.Number(40)}, {Name: "temperature", Value: ingest.Number(21.5)}}})
		}
		require.NoError(t, db.Write(context.Background(), rs))
		st := db.db.Stats()
		before := st.TxStats.GetWrite()
		require.NoError(t, db.Flush(context.Background()))
		st = db.db.Stats()
		written := st.TxStats.GetWrite() - before
		// 2,000 chunks of about 40 bytes: some 20 leaf pages and their
		// branches; a page per device would be over 1,000.
		require.Less(t, written, int64(100), "round %d: pages written by one flush of 1,000 devices", round)
	}
	got, err := db.Query("device-0999", "temperature", t0, t0.Add(time.Minute))
	require.NoError(t, err)
	require.Len(t, got, 5)
}

// TestOpenConvertsTheFirstLayout opens a file written as the first layout
// did (a bucket per device) and finds its samples, and the old bucket gone.
func TestOpenConvertsTheFirstLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	old, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	key := func(field string, t time.Time) []byte {
		return binary.BigEndian.AppendUint64(append([]byte(field), 0), uint64(t.UnixNano())^(1<<63))
	}
	require.NoError(t, old.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket(legacyBucket)
		require.NoError(t, err)
		b, err := root.CreateBucket([]byte("d1"))
		require.NoError(t, err)
		require.NoError(t, b.Put(key("t", t0), binary.BigEndian.AppendUint64([]byte{byte(ingest.KindNumber)}, math.Float64bits(-1.5))))
		require.NoError(t, b.Put(key("t", t0.Add(time.Second)), binary.BigEndian.AppendUint64([]byte{byte(ingest.KindNumber)}, math.Float64bits(2))))
		require.NoError(t, b.Put(key("mode", t0), append([]byte{byte(ingest.KindString)}, "heat"...)))
		require.NoError(t, b.Put(key("on", t0), []byte{byte(ingest.KindBool), 1}))
		return nil
	}))
	require.NoError(t, old.Close())

	db, err := Open(path, Options{})
	require.NoError(t, err)
	defer db.Close()
	got, err := db.Query("d1", "t", t0.Add(-time.Minute), t0.Add(time.Minute))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.Number(-1.5)}, {t0.Add(time.Second), ingest.Number(2)}}, got)
	got, err = db.Query("d1", "mode", t0, t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.String("heat")}}, got)
	got, err = db.Query("d1", "on", t0, t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, []Sample{{t0, ingest.Bool(true)}}, got)
	require.NoError(t, db.db.View(func(tx *bolt.Tx) error {
		require.Nil(t, tx.Bucket(legacyBucket), "the old layout is gone")
		return nil
	}))
}
