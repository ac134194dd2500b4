package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
)

func TestWriteQueryKeepsTypesAndOverwritesReplays(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"))
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

func TestDeleteBeforeKeepsNewerSamples(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"))
	require.NoError(t, err)
	defer db.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var rs []ingest.Reading
	for i := range 10 {
		for _, dev := range []string{"a", "b"} {
			rs = append(rs, ingest.Reading{DeviceID: dev, Time: t0.Add(time.Duration(i) * time.Hour), Fields: []ingest.Field{
				{Name: "t", Value: ingest.Number(float64(i))}, {Name: "u", Value: ingest.Bool(true)}}})
		}
	}
	require.NoError(t, db.Write(context.Background(), rs))
	n, err := db.DeleteBefore(t0.Add(4 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, 2*2*4, n)
	for _, dev := range []string{"a", "b"} {
		for _, f := range []string{"t", "u"} {
			got, err := db.Query(dev, f, t0.Add(-time.Hour), t0.Add(24*time.Hour))
			require.NoError(t, err)
			require.Len(t, got, 6)
			require.Equal(t, t0.Add(4*time.Hour), got[0].Time)
		}
	}
}
