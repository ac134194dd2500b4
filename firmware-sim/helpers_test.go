package firmwaresim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

const adminToken = "admin-secret"

// eventually polls cond until it holds or timeout passes, then fails the test.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", timeout, fmt.Sprintf(format, args...))
		}
		<-tick.C
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger whose output is shown only if the test fails.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	var buf syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeHub stands in for the hub's device provisioning API: create a device
// (409 if it exists) and rotate a device's token. It remembers the current
// token of each device, which the test broker checks on CONNECT.
type fakeHub struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	tokens   map[string]string // device ID -> current token
	types    map[string]string
	created  []string
	rotated  []string
	requests int
	failures map[string]int // device ID -> 503 answers still to give on create
	limited  map[string]int // device ID -> 429 answers still to give on create
}

func newFakeHub(t testing.TB, existing ...string) *fakeHub {
	t.Helper()
	h := &fakeHub{
		t:        t,
		tokens:   map[string]string{},
		types:    map[string]string{},
		failures: map[string]int{},
		limited:  map[string]int{},
	}
	for _, id := range existing {
		h.tokens[id] = "old-token-" + id
		h.types[id] = TypeThermostat
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/devices", h.create)
	mux.HandleFunc("POST /api/v1/devices/{id}/token", h.rotate)
	h.srv = httptest.NewServer(h.authorize(mux))
	t.Cleanup(h.srv.Close)
	return h
}

// failCreate makes the next n creations of id answer 503.
func (h *fakeHub) failCreate(id string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures[id] = n
}

// limitCreate makes the next n creations of id answer 429 with Retry-After: 0.
func (h *fakeHub) limitCreate(id string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limited[id] = n
}

func (h *fakeHub) token(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tokens[id]
}

func (h *fakeHub) snapshot() (created, rotated []string, requests int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.created...), append([]string(nil), h.rotated...), h.requests
}

func (h *fakeHub) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.requests++
		h.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+adminToken {
			problem(w, http.StatusUnauthorized, "Unauthorized", "missing or invalid token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *fakeHub) create(w http.ResponseWriter, r *http.Request) {
	var spec deviceSpec
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		problem(w, http.StatusBadRequest, "Bad Request", err.Error())
		return
	}
	if spec.ID == "" || (spec.Type != TypeThermostat && spec.Type != TypeWearable) || spec.Labels["sim"] != "true" {
		problem(w, http.StatusBadRequest, "Bad Request", fmt.Sprintf("unexpected device %+v", spec))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.limited[spec.ID] > 0 {
		h.limited[spec.ID]--
		w.Header().Set("Retry-After", "0")
		problem(w, http.StatusTooManyRequests, "Too Many Requests", "rate limited")
		return
	}
	if h.failures[spec.ID] > 0 {
		h.failures[spec.ID]--
		problem(w, http.StatusServiceUnavailable, "Service Unavailable", "starting")
		return
	}
	if _, ok := h.tokens[spec.ID]; ok {
		problem(w, http.StatusConflict, "Conflict", "device "+spec.ID+" exists")
		return
	}
	h.tokens[spec.ID] = "token-" + spec.ID
	h.types[spec.ID] = spec.Type
	h.created = append(h.created, spec.ID)
	writeJSON(w, http.StatusCreated, h.credentials(spec.ID))
}

func (h *fakeHub) rotate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.tokens[id]; !ok {
		problem(w, http.StatusNotFound, "Not Found", "no device "+id)
		return
	}
	h.tokens[id] = "rotated-token-" + id
	h.rotated = append(h.rotated, id)
	writeJSON(w, http.StatusOK, h.credentials(id))
}

// credentials builds the create/rotate answer; h.mu must be held.
func (h *fakeHub) credentials(id string) map[string]any {
	return map[string]any{
		"device": map[string]any{
			"id":         id,
			"type":       h.types[id],
			"labels":     map[string]string{"sim": "true"},
			"created_at": time.Now().UTC().Format(time.RFC3339),
		},
		"token": h.tokens[id],
	}
}

func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": title, "status": status, "detail": detail,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// credentialsHook admits a client when its client ID equals its username
// and its password is the token the fake hub issued for that device; the
// observer user is admitted as is. Every topic is allowed.
type credentialsHook struct {
	mqtt.HookBase
	hub *fakeHub
}

var _ mqtt.Hook = (*credentialsHook)(nil)

func (h *credentialsHook) ID() string { return "test-credentials" }

func (h *credentialsHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *credentialsHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if user == "observer" {
		return true
	}
	return cl.ID == user && string(pk.Connect.Password) == h.hub.token(user)
}

func (h *credentialsHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// testBroker is an in-process mochi broker on a loopback port.
type testBroker struct {
	addr string
	stop func()
}

// startBroker starts a broker on addr ("127.0.0.1:0" for any free port)
// that authenticates against hub. It is stopped at cleanup, or earlier by stop.
func startBroker(t testing.TB, addr string, hub *fakeHub) *testBroker {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, srv.AddHook(&credentialsHook{hub: hub}, nil))
	require.NoError(t, srv.AddListener(listeners.NewNet("test", ln)))
	require.NoError(t, srv.Serve())
	b := &testBroker{addr: ln.Addr().String(), stop: sync.OnceFunc(func() { _ = srv.Close() })}
	t.Cleanup(b.stop)
	return b
}
