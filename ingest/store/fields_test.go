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

// TestHistoryOfEveryFieldIsBounded: a query naming no fields gets at most
// ingest.MaxFields series (the first by name), however many fields the
// device has; DeviceFields lists what the store knows and ForgetFields
// drops a deleted device's names.
func TestHistoryOfEveryFieldIsBounded(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "history.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	ts := time.Unix(1700000000, 0)
	r := ingest.Reading{DeviceID: "wide", Time: ts}
	for i := range ingest.MaxFields + 10 {
		r.Fields = append(r.Fields, ingest.Field{Name: fmt.Sprintf("f%03d", i), Value: ingest.Number(float64(i))})
	}
	require.NoError(t, db.Write(context.Background(), []ingest.Reading{r, {DeviceID: "other", Time: ts,
		Fields: []ingest.Field{{Name: "x", Value: ingest.Number(1)}}}}))
	require.NoError(t, db.Flush(context.Background()))

	series, err := db.History(context.Background(), ingest.HistoryQuery{DeviceID: "wide", From: ts.Add(-time.Hour), To: ts.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, series, ingest.MaxFields)
	require.Equal(t, "f000", series[0].Field)
	require.Equal(t, fmt.Sprintf("f%03d", ingest.MaxFields-1), series[len(series)-1].Field)

	known, err := db.DeviceFields()
	require.NoError(t, err)
	require.Len(t, known["wide"], ingest.MaxFields+10)
	require.Equal(t, []string{"x"}, known["other"])
	require.NoError(t, db.ForgetFields("wide"))
	known, err = db.DeviceFields()
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"other": {"x"}}, known)
}
