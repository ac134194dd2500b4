package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
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
	"github.com/telehub/telehub/internal/testenv"
)

// secHub is a web server on a real listener with its token store.
type secHub struct {
	url    string
	tokens *auth.Store
	hub    *live.Hub
	reg    *prometheus.Registry
}

// startSecHub serves the API through Listen and HTTPServer, as the hub
// does, with cfg (zero members take the defaults, rate limit off unless
// set) and deps edited by edit (may be nil).
func startSecHub(t *testing.T, cfg Config, edit func(*Deps)) *secHub {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	reg, err := devices.New(db)
	require.NoError(t, err)
	tokens, err := auth.New(db)
	require.NoError(t, err)
	require.NoError(t, tokens.EnsureAdmin(adminToken))
	def := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = def.ReadTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	require.NoError(t, cfg.Validate())
	h := &secHub{tokens: tokens, hub: live.New(1024), reg: prometheus.NewRegistry()}
	deps := Deps{Registry: reg, Latest: ingest.NewLatest(), Presence: devices.NewPresence(), Stream: h.hub, Metrics: h.reg,
		Tokens: tokens, Logger: slog.New(slog.DiscardHandler), HTTP: cfg, Live: StreamConfig{WriteEvery: time.Millisecond}}
	if edit != nil {
		edit(&deps)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := New(ctx, deps)
	ln, _, err := Listen(cfg)
	require.NoError(t, err)
	srv := HTTPServer(cfg, s, ctx, nil)
	go srv.Serve(ln)
	t.Cleanup(func() {
		cancel()
		srv.Close()
	})
	h.url = "http://" + ln.Addr().String()
	return h
}

// call sends a request with the token in the Authorization header (none
// when token is empty) and returns the status and the decoded body.
func (h *secHub) call(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// newToken creates a token through the API and returns its ID and secret.
func (h *secHub) newToken(t *testing.T, role string) (string, string) {
	t.Helper()
	status, out := h.call(t, "POST", "/api/v1/tokens", adminToken, `{"name":"`+role+` x","role":"`+role+`"}`)
	require.Equal(t, http.StatusCreated, status, out)
	return out["token"].(map[string]any)["id"].(string), out["secret"].(string)
}

func (h *secHub) ticket(t *testing.T, token string) string {
	t.Helper()
	status, out := h.call(t, "POST", "/api/v1/live/ticket", token, "")
	require.Equal(t, http.StatusCreated, status, out)
	return out["ticket"].(string)
}

// metrics returns the text of /metrics.
func (h *secHub) metrics(t *testing.T) string {
	t.Helper()
	text, err := testenv.MetricsText(h.reg)
	require.NoError(t, err)
	return text
}

func (h *secHub) wsURL(path string) string { return "ws" + strings.TrimPrefix(h.url, "http") + path }

// Issue #15, item 1: a ticket taken with an admin token whose token is
// then deleted opens nothing; tickets never open other routes nor mint
// tickets; a ticket works once, on a stream route.
func TestTicketsAreOnceStreamOnlyAndFollowTheirToken(t *testing.T) {
	h := startSecHub(t, Config{}, func(d *Deps) { d.Live.PollWait = 50 * time.Millisecond })
	id, secret := h.newToken(t, "admin")

	// A good ticket opens the live stream, once.
	tk := h.ticket(t, secret)
	c, resp, err := websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?ticket="+tk), nil)
	require.NoError(t, err)
	resp.Body.Close()
	c.Close()
	_, resp, err = websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?ticket="+tk), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a ticket is good once")

	// Tickets open no other route and mint no tickets.
	tk = h.ticket(t, secret)
	status, _ := h.call(t, "POST", "/api/v1/live/ticket?ticket="+tk, "", "")
	require.Equal(t, http.StatusUnauthorized, status, "a ticket does not mint a ticket")
	status, _ = h.call(t, "POST", "/api/v1/tokens?ticket="+tk, "", `{"name":"chained","role":"admin"}`)
	require.Equal(t, http.StatusUnauthorized, status, "a ticket does not open the token API")
	status, _ = h.call(t, "GET", "/api/v1/events/poll?since=0&ticket="+tk, "", "")
	require.Equal(t, http.StatusOK, status, "refused elsewhere, the ticket was not used up")

	// The repro of the issue: a ticket outliving its deleted token.
	tk = h.ticket(t, secret)
	status, _ = h.call(t, "DELETE", "/api/v1/tokens/"+id, adminToken, "")
	require.Equal(t, http.StatusNoContent, status)
	status, _ = h.call(t, "GET", "/api/v1/whoami", secret, "")
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = h.call(t, "POST", "/api/v1/tokens?ticket="+tk, "", `{"name":"chained","role":"admin"}`)
	require.Equal(t, http.StatusUnauthorized, status)
	_, resp, err = websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?ticket="+tk), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the ticket of a deleted token opens no stream")
	require.Len(t, h.tokens.List(), 1, "no token was created")
}

// Issue #15, item 3: ?token= opens only the stream routes.
func TestTokenInQueryOnlyOnStreamRoutes(t *testing.T) {
	h := startSecHub(t, Config{}, func(d *Deps) { d.Live.PollWait = 50 * time.Millisecond })
	status, out := h.call(t, "GET", "/api/v1/devices?token="+adminToken, "", "")
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, out["detail"], "only on the stream routes")
	status, _ = h.call(t, "POST", "/api/v1/tokens?token="+adminToken, "", `{"name":"q","role":"admin"}`)
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = h.call(t, "GET", "/api/v1/events/poll?since=0&token="+adminToken, "", "")
	require.Equal(t, http.StatusOK, status)
	status, _ = h.call(t, "GET", "/api/v1/devices", adminToken, "")
	require.Equal(t, http.StatusOK, status)
}

// Issue #15, item 2: deleting a token closes its WebSocket, its SSE stream
// and its long poll, and leaves the streams of other tokens open.
func TestDeletedTokenClosesItsStreams(t *testing.T) {
	h := startSecHub(t, Config{}, func(d *Deps) { d.Live.PollWait = time.Hour })
	id, secret := h.newToken(t, "operator")
	_, other := h.newToken(t, "viewer")

	ws, resp, err := websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?token="+secret), nil)
	require.NoError(t, err)
	resp.Body.Close()
	defer ws.Close()
	otherWS, resp, err := websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?token="+other), nil)
	require.NoError(t, err)
	resp.Body.Close()
	defer otherWS.Close()

	req, _ := http.NewRequest("GET", h.url+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	sse, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer sse.Body.Close()
	require.Equal(t, http.StatusOK, sse.StatusCode)

	// Both sockets are streaming before the token goes.
	h.hub.Publish(live.Message{Kind: "reading", Body: []byte(`{"kind":"reading","n":1}`)})
	require.Equal(t, "reading", readMsg(t, ws).Kind)
	require.Equal(t, "reading", readMsg(t, otherWS).Kind)

	pollDone := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", h.url+"/api/v1/events/poll?since=1", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			pollDone <- 0
			return
		}
		resp.Body.Close()
		pollDone <- resp.StatusCode
	}()
	testenv.Eventually(t, 10*time.Second, "the poll client is counted", func() bool {
		return strings.Contains(h.metrics(t), `telehub_live_clients{transport="poll"} 1`)
	})
	status, _ := h.call(t, "DELETE", "/api/v1/tokens/"+id, adminToken, "")
	require.Equal(t, http.StatusNoContent, status)

	// The socket closes with 1008: read until the close arrives (the
	// deadline fails the test, it does not time anything).
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			require.True(t, errors.As(err, &ce), "closed by the hub, not by the deadline: %v", err)
			require.Equal(t, websocket.ClosePolicyViolation, ce.Code)
			break
		}
	}
	// The SSE stream ends.
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, sse.Body); done <- err }()
	select {
	case err := <-done:
		require.NoError(t, err, "the stream ends cleanly")
	case <-time.After(10 * time.Second):
		t.Fatal("the SSE stream of a deleted token stays open")
	}
	// The long poll (waiting up to an hour) answers 401.
	select {
	case status := <-pollDone:
		require.Equal(t, http.StatusUnauthorized, status)
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll of a deleted token goes on")
	}
	// The other token's socket streams on.
	h.hub.Publish(live.Message{Kind: "reading", Body: []byte(`{"kind":"reading","n":2}`)})
	require.Equal(t, "reading", readMsg(t, otherWS).Kind)
}

// silentTokens is the real token store with its change notice hidden, as a
// store that learns of a deletion late would behave: the socket stays
// open, and a command sent on it must still be refused.
type silentTokens struct{ *auth.Store }

func (silentTokens) Changed() <-chan struct{} { return nil }

// Issue #15, item 2: a command sent over a socket re-checks its token.
func TestSocketCommandRechecksTheToken(t *testing.T) {
	var tokens silentTokens
	h := startSecHub(t, Config{}, func(d *Deps) {
		tokens = silentTokens{d.Tokens.(*auth.Store)}
		d.Tokens = tokens
	})
	id, secret := h.newToken(t, "operator")
	ws, resp, err := websocket.DefaultDialer.Dial(h.wsURL("/api/v1/live?token="+secret), nil)
	require.NoError(t, err)
	resp.Body.Close()
	defer ws.Close()
	send := func(ref string) map[string]any {
		require.NoError(t, ws.WriteJSON(map[string]any{"type": "command", "ref": ref, "device_id": "d1", "name": "reboot"}))
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		var out map[string]any
		require.NoError(t, ws.ReadJSON(&out))
		return out
	}
	require.EqualValues(t, http.StatusNotImplemented, send("1")["status"], "the token may send (this hub has no commands)")
	require.NoError(t, tokens.Delete(id))
	out := send("2")
	require.EqualValues(t, http.StatusUnauthorized, out["status"], out)
	require.Equal(t, "2", out["ref"])
}

// Issue #15, item 3: security headers on the page and the API; no
// directory listings.
func TestSecurityHeadersAndNoDirectoryListing(t *testing.T) {
	h := startSecHub(t, Config{}, nil)
	for _, path := range []string{"/", "/js/app.js", "/api/v1/devices", "/healthz"} {
		resp, err := http.Get(h.url + path)
		require.NoError(t, err)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		require.Contains(t, csp, "frame-ancestors 'none'", path)
		require.Contains(t, csp, "script-src 'self'", path)
		require.NotContains(t, csp, "unsafe-inline", path)
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), path)
		require.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"), path)
	}
	for _, path := range []string{"/js/", "/js"} {
		resp, err := http.Get(h.url + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
		require.NotContains(t, string(b), "app.js", "no listing of "+path)
	}
	resp, err := http.Get(h.url + "/js/app.js")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// Issue #15, item 3: a request body sent too slowly is cut off at
// http.read_timeout, while the stream routes outlive it: a long poll
// waiting longer than the timeout answers, and an SSE stream opened
// before it still delivers afterwards.
func TestReadTimeoutCutsSlowBodiesNotStreams(t *testing.T) {
	h := startSecHub(t, Config{ReadTimeout: 300 * time.Millisecond}, func(d *Deps) { d.Live.PollWait = time.Second })

	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+adminToken+
		"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
	require.NoError(t, err)
	// The rest of the body never comes. The hub must give up: answer or
	// close, before this test's own deadline.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = bufio.NewReader(conn).ReadString('\n')
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the hub still waits for the body")

	req, _ := http.NewRequest("GET", h.url+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	sse, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer sse.Body.Close()

	// The poll waits its second, three read timeouts, and answers.
	status, out := h.call(t, "GET", "/api/v1/events/poll?since=0", adminToken, "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, out, "next")

	h.hub.Publish(live.Message{Kind: "reading", Body: []byte(`{"kind":"reading","n":7}`)})
	lines := bufio.NewScanner(sse.Body)
	for lines.Scan() {
		if strings.Contains(lines.Text(), `"n":7`) {
			return
		}
	}
	t.Fatalf("the SSE stream ended: %v", lines.Err())
}

// Issue #15, item 3: http.max_connections bounds the open connections; the
// next client is served once one closes.
func TestMaxConnections(t *testing.T) {
	h := startSecHub(t, Config{MaxConnections: 1}, nil)
	addr := strings.TrimPrefix(h.url, "http://")
	first, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	get := func(c net.Conn, wait time.Duration) (string, error) {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		return bufio.NewReader(c).ReadString('\n')
	}
	line, err := get(first, 10*time.Second)
	require.NoError(t, err)
	require.Contains(t, line, "200")

	second, err := net.Dial("tcp", addr) // accepted by the kernel, not by the hub
	require.NoError(t, err)
	defer second.Close()
	_, err = get(second, 300*time.Millisecond)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "a second connection is not served while the first is open: %v", err)

	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err = bufio.NewReader(second).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "200", "served once the first closed")
}

// Issue #15, item 4: a token over its rate gets 429 problem JSON with
// Retry-After and the RateLimit headers; other tokens are not affected;
// requests without a valid token are limited by address; /metrics counts.
func TestRateLimitPerTokenAndAddress(t *testing.T) {
	h := startSecHub(t, Config{RateLimit: 0.5, RateBurst: 3}, nil)
	_, other := h.newToken(t, "viewer") // 1 of the admin's 3

	get := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", h.url+"/api/v1/whoami", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	resp := get(adminToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("RateLimit-Limit"))
	require.Equal(t, "1", resp.Header.Get("RateLimit-Remaining"))
	require.Equal(t, http.StatusOK, get(adminToken).StatusCode)

	req, _ := http.NewRequest("GET", h.url+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	over, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var p map[string]any
	require.NoError(t, json.NewDecoder(over.Body).Decode(&p))
	over.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, over.StatusCode)
	require.Equal(t, "application/problem+json", over.Header.Get("Content-Type"))
	require.EqualValues(t, 429, p["status"])
	require.NotEmpty(t, over.Header.Get("Retry-After"))
	require.Equal(t, "3", over.Header.Get("RateLimit-Limit"))
	require.Equal(t, "0", over.Header.Get("RateLimit-Remaining"))
	require.NotEmpty(t, over.Header.Get("RateLimit-Reset"))

	require.Equal(t, http.StatusOK, get(other).StatusCode, "another token has its own bucket")

	for range 3 {
		require.Equal(t, http.StatusUnauthorized, get("wrong").StatusCode)
	}
	require.Equal(t, http.StatusTooManyRequests, get("wrong").StatusCode, "guessing tokens is limited by address")
	require.Equal(t, http.StatusTooManyRequests, get("").StatusCode)

	require.Contains(t, h.metrics(t), `telehub_http_rate_limited_total{by="token"} 1`)
	require.Contains(t, h.metrics(t), `telehub_http_rate_limited_total{by="address"} 2`)
}

// The limiter maps stay bounded: idle limiters are dropped, and addresses
// beyond the bound are refused rather than remembered.
func TestLimitersStayBounded(t *testing.T) {
	l := newLimiters(100, 10, nil, nil) // refills in 100 ms, idle after 1 s
	l.maxAddresses = 50
	now := time.Now()
	for i := range 50 {
		_, ok := l.get(limitByAddress, "10.0.0."+strconv.Itoa(i), now)
		require.True(t, ok)
	}
	_, ok := l.get(limitByAddress, "10.9.9.9", now)
	require.False(t, ok, "full of active addresses: a new one is refused")
	require.Equal(t, 50, l.size())

	later := now.Add(2 * time.Second) // every entry has refilled
	_, ok = l.get(limitByAddress, "10.9.9.9", later)
	require.True(t, ok, "the idle ones were swept")
	require.Equal(t, 1, l.size())
	_, ok = l.get(limitByToken, "tok", later.Add(2*time.Minute))
	require.True(t, ok)
	require.Equal(t, 1, l.size(), "the periodic sweep drops idle entries too")
}
