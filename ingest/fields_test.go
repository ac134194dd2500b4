package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

func points(names ...string) []Point {
	pt := Point{Time: time.Unix(1700000000, 0)}
	for _, n := range names {
		pt.Fields = append(pt.Fields, Field{Name: n, Value: Number(1)})
	}
	return []Point{pt}
}

// TestFieldsCapSurvivesRestartAndForget: a device may have at most max
// distinct field names; a payload that would pass it is refused whole,
// known names keep working, and the names are saved in the state database,
// so a restart does not give the device a fresh allowance. Forgetting a
// device (it was deleted) drops its names, also across restarts.
func TestFieldsCapSurvivesRestartAndForget(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	f, fresh, err := NewFields(db, 3, logger)
	require.NoError(t, err)
	require.True(t, fresh)
	f.Start(context.Background())

	require.NoError(t, f.Admit("d1", points("a", "b")))
	require.NoError(t, f.Admit("d1", points("a", "b", "c")))
	err = f.Admit("d1", points("a", "d"))
	require.ErrorIs(t, err, ErrTooManyFields, "known and new names mixed: refused whole")
	require.Contains(t, err.Error(), `"d"`)
	require.NoError(t, f.Admit("d1", points("c", "a")), "known names keep working")
	require.ErrorIs(t, f.Admit("d2", points("1", "2", "3", "4")), ErrTooManyFields, "one payload past the cap")
	require.Zero(t, f.Count("d2"), "nothing of a refused payload is kept")
	require.NoError(t, f.Admit("d3", points("x")))
	f.Stop()
	require.NoError(t, db.Close())

	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	f, fresh, err = NewFields(db, 3, logger)
	require.NoError(t, err)
	require.False(t, fresh)
	f.Start(context.Background())
	require.Equal(t, 3, f.Count("d1"))
	require.ErrorIs(t, f.Admit("d1", points("e")), ErrTooManyFields, "the cap holds after a restart")
	require.NoError(t, f.Admit("d1", points("b")))
	f.Forget("d3")
	f.Stop()
	require.NoError(t, db.Close())

	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	f, _, err = NewFields(db, 3, logger)
	require.NoError(t, err)
	require.Zero(t, f.Count("d3"), "a forgotten device's names are gone for good")
	require.Equal(t, 3, f.Count("d1"))
}

// TestPipelineRefusesNewFieldsPastTheCap: the pipeline counts and refuses
// a payload past the device's field cap before it reaches the log, and the
// latest values keep only admitted names.
func TestPipelineRefusesNewFieldsPastTheCap(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := wal.Open(t.TempDir(), wal.Options{}, logger)
	require.NoError(t, err)
	defer l.Close()
	m := NewMetrics(prometheus.NewRegistry())
	latest := NewLatest()
	p := NewPipeline(l, live.New(16), DefaultLimits(), m, latest, logger)
	f, _, err := NewFields(nil, 4, logger)
	require.NoError(t, err)
	p.SetFields(f)
	dev := Device{ID: "flood", Type: "t"}
	for i := range 10 {
		_, err := p.Ingest(context.Background(), dev, fmt.Appendf(nil, `{"n%d":1,"m%d":2}`, i, i), FormatAuto)
		if i < 2 {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, ErrTooManyFields)
		}
	}
	_, err = p.Ingest(context.Background(), dev, []byte(`{"n0":5}`), FormatAuto)
	require.NoError(t, err)
	require.EqualValues(t, 8, testutil.ToFloat64(m.Fields))
	require.EqualValues(t, 3, testutil.ToFloat64(m.Payloads))
	_, vals := latest.Get("flood")
	require.Equal(t, map[string]any{"n0": 5.0, "m0": 2.0, "n1": 1.0, "m1": 2.0}, vals)
}
