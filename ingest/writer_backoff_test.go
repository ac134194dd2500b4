package ingest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prometheus/client_golang/prometheus"
)

// downSink fails its first calls and records the (bubble) time of each call.
type downSink struct {
	mu    sync.Mutex
	down  int
	calls []time.Time
}

func (s *downSink) Write(context.Context, []Reading) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
	if s.down > 0 {
		s.down--
		return errors.New("connection refused")
	}
	return nil
}

// TestWriterNoticesAStoreBackWithinRetryMax checks that with the default
// configuration the writer tries a store that is down at least every 5 s,
// jitter included, however long it has been down: a store that comes back
// is written to within 5 s.
func TestWriterNoticesAStoreBackWithinRetryMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &downSink{down: 40}
		cfg := DefaultWriterConfig()
		w := NewWriter(nil, sink, cfg, NewWriterMetrics(prometheus.NewRegistry()), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
		require.NoError(t, w.write(context.Background(), []Reading{{DeviceID: "d1"}}))
		require.Len(t, sink.calls, 41)
		var longest time.Duration
		for i := 1; i < len(sink.calls); i++ {
			longest = max(longest, sink.calls[i].Sub(sink.calls[i-1]))
		}
		require.LessOrEqual(t, longest, 5*time.Second, "longest wait between retries")
		require.GreaterOrEqual(t, longest, 2500*time.Millisecond, "the backoff still grows to about retry_max")
	})
}
