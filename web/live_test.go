package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/auth"
	"github.com/telehub/telehub/internal/live"
)

const adminToken = "test-admin-token"

func newServer(t *testing.T, hub *live.Hub) *httptest.Server {
	t.Helper()
	srv, _ := newServerWith(t, hub, StreamConfig{WriteEvery: time.Millisecond}) // as configured by default
	return srv
}

// newServerWith returns the server and its registry, with the stream sized
// by sc.
func newServerWith(t testing.TB, hub *live.Hub, sc StreamConfig) (*httptest.Server, *devices.Registry) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	reg, err := devices.New(db)
	require.NoError(t, err)
	tokens, err := auth.New(db)
	require.NoError(t, err)
	require.NoError(t, tokens.EnsureAdmin(adminToken))
	ctx, cancel := context.WithCancel(context.Background())
	s := New(ctx, Deps{Registry: reg, Latest: ingest.NewLatest(), Presence: devices.NewPresence(), Stream: hub, Metrics: prometheus.NewRegistry(),
		Tokens: tokens, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Live: sc})
	srv := httptest.NewServer(s)
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv, reg
}

func dial(t *testing.T, srv *httptest.Server, query string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/live?token=" + adminToken + query
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	require.NoError(t, err)
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

type wsFrame struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Missed uint64 `json:"missed"`
	N      int    `json:"n"`
}

func next(t *testing.T, c *websocket.Conn) wsFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	require.NoError(t, err)
	var f wsFrame
	require.NoError(t, json.Unmarshal(b, &f), string(b))
	return f
}

func publishN(h *live.Hub, from, n int, pad string) {
	for i := from; i < from+n; i++ {
		h.Publish(live.Message{Kind: "reading", Body: fmt.Appendf(nil, `{"kind":"reading","n":%d,"pad":%q}`, i, pad)})
	}
}

// A client that stops reading never holds up publishing or another client.
func TestStalledClientDoesNotSlowOthers(t *testing.T) {
	hub := live.New(1 << 15)
	srv := newServer(t, hub)
	stalled := dial(t, srv, "")
	_ = stalled // connected, never read: its socket buffers fill up
	reader := dial(t, srv, "")

	const n = 20000
	pad := strings.Repeat("x", 1000) // 20 MB in all, far beyond socket buffers
	done := make(chan struct{})
	go func() { publishN(hub, 0, n, pad); close(done) }()
	for i := range n {
		f := next(t, reader)
		require.Equal(t, "reading", f.Kind)
		require.Equal(t, uint64(i+1), f.Seq)
		require.Equal(t, i, f.N)
	}
	<-done
}

func TestResumeWithSinceAndGap(t *testing.T) {
	hub := live.New(16)
	srv := newServer(t, hub)
	publishN(hub, 0, 100, "")

	c := dial(t, srv, "&since=95")
	for want := uint64(96); want <= 100; want++ {
		require.Equal(t, want, next(t, c).Seq)
	}
	publishN(hub, 100, 1, "")
	require.Equal(t, uint64(101), next(t, c).Seq, "live messages follow the replay")

	g := dial(t, srv, "&since=0")
	f := next(t, g)
	require.Equal(t, "gap", f.Kind)
	require.Equal(t, uint64(85), f.Missed, "seq 1..85 left the ring of 16")
	require.Equal(t, uint64(86), next(t, g).Seq)
}

func TestLiveRefusesBadRequests(t *testing.T) {
	srv := newServer(t, live.New(16))
	for _, tc := range []struct {
		name, query string
		status      int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "?token=nope", http.StatusUnauthorized},
		{"bad since", "?token=" + adminToken + "&since=abc", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/api/v1/live"+tc.query, nil)
			require.Error(t, err)
			require.Equal(t, tc.status, resp.StatusCode)
			require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		})
	}
}

func wsDial(srv *httptest.Server, path string) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+path, nil)
}
