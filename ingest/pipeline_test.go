package ingest

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

func TestLiveReadingBodyIsEncodedOnFirstReadOnce(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := wal.Open(t.TempDir(), wal.Options{}, logger)
	require.NoError(t, err)
	defer l.Close()
	hub := live.New(16)
	p := NewPipeline(l, hub, DefaultLimits(), NewMetrics(prometheus.NewRegistry()), NewLatest(), logger)
	_, err = p.Ingest(context.Background(), Device{ID: "t1", Type: "thermostat"},
		[]byte(`{"ts":1732350000123,"temperature":21.5,"on":true}`), FormatAuto)
	require.NoError(t, err)

	msgs, _ := hub.Read(0, nil, 10)
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Nil(t, m.Body, "ingest does not encode the body")
	lr, ok := m.Data.(*LiveReading)
	require.True(t, ok)
	require.Nil(t, lr.body, "nobody has read it yet")

	want := `{"kind":"reading","device_id":"t1","device_type":"thermostat","ts":"` +
		time.UnixMilli(1732350000123).UTC().Format(time.RFC3339Nano) + `","fields":{"on":true,"temperature":21.5}}`
	require.JSONEq(t, want, string(m.Payload()))
	first := m.Payload()
	require.Same(t, &first[0], &msgs[0].Payload()[0], "encoded once, shared by every reader")
	require.JSONEq(t, `{"seq":`+strconv.FormatUint(m.Seq, 10)+`,`+want[1:], string(m.AppendFrame(nil)))
}
