package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/testenv"
)

func TestSignAndVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"id":"evt_1","kind":"alert"}`)
	sig := Sign("s3cret-s3cret-s3cret", now, body)
	require.Regexp(t, `^t=1700000000,v1=[0-9a-f]{64}$`, sig)
	require.NoError(t, Verify("s3cret-s3cret-s3cret", sig, body, now.Add(time.Minute), 5*time.Minute))
	for _, tc := range []struct {
		name, secret, header string
		body                 []byte
		at                   time.Time
		want                 error
	}{
		{"other secret", "another-secret-xx", sig, body, now, ErrBadSignature},
		{"changed body", "s3cret-s3cret-s3cret", sig, []byte(`{"id":"evt_2","kind":"alert"}`), now, ErrBadSignature},
		{"changed timestamp", "s3cret-s3cret-s3cret", "t=1700000001," + sig[len("t=1700000000,"):], body, now, ErrBadSignature},
		{"garbage", "s3cret-s3cret-s3cret", "v1=zz", body, now, ErrBadSignature},
		{"too old", "s3cret-s3cret-s3cret", sig, body, now.Add(6 * time.Minute), ErrStale},
		{"from the future", "s3cret-s3cret-s3cret", sig, body, now.Add(-6 * time.Minute), ErrStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, Verify(tc.secret, tc.header, tc.body, tc.at, 5*time.Minute), tc.want)
		})
	}
}

func TestPolicy(t *testing.T) {
	def := NewPolicy(DefaultConfig())
	strict := DefaultConfig()
	strict.AllowPrivate, strict.DenyCIDRs, strict.AllowCIDRs = false, []string{"203.0.113.0/24"}, []string{"10.9.0.0/16", "169.254.169.254/32"}
	str := NewPolicy(strict)
	loop := DefaultConfig()
	loop.AllowLoopback = true
	lp := NewPolicy(loop)
	for _, tc := range []struct {
		ip                     string
		dflt, strict, loopback bool
	}{
		{"93.184.215.14", true, true, true},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", true, true, true},
		{"169.254.169.254", false, true, false}, // metadata; explicitly allowed in strict
		{"::ffff:169.254.169.254", false, true, false},
		{"169.254.170.2", false, false, false},
		{"fd00:ec2::254", false, false, false},
		{"100.100.100.200", false, false, false},
		{"169.254.1.1", false, false, false},
		{"fe80::1", false, false, false},
		{"127.0.0.1", false, false, true},
		{"127.8.9.10", false, false, true},
		{"::1", false, false, true},
		{"0.0.0.0", false, false, false},
		{"0.1.2.3", false, false, false},
		{"::", false, false, false},
		{"224.0.0.1", false, false, false},
		{"255.255.255.255", false, false, false},
		{"10.1.2.3", true, false, true},
		{"10.9.1.1", true, true, true},
		{"192.168.1.10", true, false, true},
		{"fd12::1", true, false, true},
		{"203.0.113.5", true, false, true},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tc.ip)
			require.Equal(t, tc.dflt, def.Check(ip) == nil, "default: %v", def.Check(ip))
			require.Equal(t, tc.strict, str.Check(ip) == nil, "strict: %v", str.Check(ip))
			require.Equal(t, tc.loopback, lp.Check(ip) == nil, "loopback allowed: %v", lp.Check(ip))
		})
	}
}

func TestCheckURL(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RequireHTTPS = true
	p := NewPolicy(cfg)
	ctx := context.Background()
	require.NoError(t, p.CheckURL(ctx, "https://93.184.215.14/hook"))
	require.NoError(t, p.CheckURL(ctx, "https://receiver.invalid/hook"), "unresolvable names are checked at delivery")
	for _, tc := range []struct{ url, want string }{
		{"http://93.184.215.14/hook", "use an https URL"},
		{"ftp://x/y", "use an http or https URL"},
		{"https:///path", "no host"},
		{"https://user:pw@93.184.215.14/", "credentials"},
		{"https://93.184.215.14/#frag", "fragment"},
		{"https://169.254.169.254/latest/meta-data/", "cloud metadata"},
		{"https://[fe80::1]/", "link-local"},
		{"https://127.0.0.1:8080/", "loopback"},
		{"https://localhost:8080/", "localhost resolves to"},
		{"::", "not a URL"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			require.ErrorContains(t, p.CheckURL(ctx, tc.url), tc.want)
		})
	}
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	c := DefaultConfig()
	c.AllowCIDRs, c.RetryMin, c.MaxPending = []string{"10.0.0.0"}, 0, 0
	err := c.Validate()
	require.ErrorContains(t, err, `webhooks.allow_cidrs[0]: "10.0.0.0"`)
	require.ErrorContains(t, err, "retry_min")
	require.ErrorContains(t, err, "max_pending")
}

// receiver is a webhook endpoint that records verified deliveries and
// answers with the status its test sets.
type receiver struct {
	*httptest.Server
	secret string
	mu     sync.Mutex
	status int
	got    []received
	bad    int
}

type received struct {
	kind, eventID, attempt string
	body                   map[string]any
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{status: http.StatusNoContent}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" ||
			Verify(r.secret, req.Header.Get(SignatureHeader), b, time.Now(), time.Minute) != nil {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.status/100 == 2 {
			var m map[string]any
			json.Unmarshal(b, &m)
			r.got = append(r.got, received{req.Header.Get("Telehub-Event"), req.Header.Get("Telehub-Event-Id"), req.Header.Get("Telehub-Delivery-Attempt"), m})
		}
		w.WriteHeader(r.status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) setStatus(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

type env struct {
	t   *testing.T
	dir string
	db  *bolt.DB
	hub *live.Hub
	d   *Dispatcher
	cfg Config
}

func testCfg() Config {
	c := DefaultConfig()
	c.AllowLoopback = true
	c.RetryMin, c.RetryMax = 10*time.Millisecond, 40*time.Millisecond
	return c
}

func newEnv(t *testing.T, cfg Config) *env {
	e := &env{t: t, dir: t.TempDir(), cfg: cfg, hub: live.New(1024)}
	e.open()
	return e
}

func (e *env) open() { e.openCtx(context.Background()) }

func (e *env) openCtx(ctx context.Context) {
	var err error
	e.db, err = bolt.Open(filepath.Join(e.dir, "state.db"), 0o600, nil)
	require.NoError(e.t, err)
	e.d, err = New(e.cfg, Deps{DB: e.db, Stream: e.hub, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(e.t, err)
	e.d.Start(ctx)
	e.t.Cleanup(e.close)
}

func (e *env) close() {
	e.d.Stop()
	e.db.Close()
}

// restart stops the dispatcher and starts a new one on the same database,
// with a new live stream as a restarted hub has.
func (e *env) restart() {
	e.close()
	e.hub = live.New(1024)
	e.open()
}

func (e *env) publish(kind, dev string, v any) {
	m, err := live.Event(kind, dev, time.Now(), v)
	require.NoError(e.t, err)
	e.hub.Publish(m)
}

func (e *env) webhook(r *receiver, events ...string) Webhook {
	w, secret, err := e.d.Create(context.Background(), Spec{URL: r.URL + "/hook", Events: events}, "admin (1)")
	require.NoError(e.t, err)
	r.secret = secret
	return w
}

func TestDeliversSignedEventsItSubscribesTo(t *testing.T) {
	e := newEnv(t, testCfg())
	r := newReceiver(t)
	w := e.webhook(r, "alert", "presence")
	require.Regexp(t, `^whsec_[0-9a-f]{48}$`, r.secret)
	require.Equal(t, []string{"alert", "presence"}, w.Events)

	e.hub.Publish(live.Message{Kind: live.KindReading, DeviceID: "t1", Body: []byte(`{"kind":"reading","device_id":"t1"}`)})
	e.publish("command", "t1", map[string]any{"id": "c1"})
	e.publish("alert", "t1", map[string]any{"change": "firing", "rule_id": "hot", "silenced": true})
	e.publish("alert", "t1", map[string]any{"change": "firing", "rule_id": "other", "targets": []string{"wh-elsewhere"}})
	e.publish("alert", "t1", map[string]any{"change": "firing", "rule_id": "hot", "targets": []string{w.ID}})
	e.publish("presence", "t1", map[string]any{"online": false})

	testenv.Eventually(t, 5*time.Second, "two deliveries", func() bool { return len(r.received()) >= 2 })
	got := r.received()
	require.Len(t, got, 2, "readings, commands, silenced and other webhooks' alerts are not delivered")
	require.Equal(t, "alert", got[0].kind)
	require.Equal(t, "presence", got[1].kind, "in order")
	require.Equal(t, "1", got[0].attempt)
	require.Equal(t, got[0].eventID, got[0].body["id"])
	require.Equal(t, "t1", got[0].body["device_id"])
	require.Equal(t, "firing", got[0].body["alert"].(map[string]any)["change"])
	require.Zero(t, r.bad, "every request was correctly signed")
	testenv.Eventually(t, 5*time.Second, "status recorded", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Status.Delivered == 2 && s.Status.Pending == 0
	})
	s, _ := e.d.Get(w.ID)
	require.Equal(t, http.StatusNoContent, s.Status.LastStatus)
	require.NotNil(t, s.Status.LastSuccessAt)

	require.NoError(t, e.d.Delete(w.ID))
	require.ErrorIs(t, e.d.Delete(w.ID), ErrNotFound)
	require.Empty(t, e.d.List())
}

// TestRetriesThroughFailuresAndRestarts: a receiver that fails, then is
// down across a restart of the hub, gets every event once it recovers, in
// order, each event with the same ID on every attempt.
func TestRetriesThroughFailuresAndRestarts(t *testing.T) {
	cfg := testCfg()
	e := newEnv(t, cfg)
	r := newReceiver(t)
	w := e.webhook(r, "*")
	r.setStatus(http.StatusServiceUnavailable)
	for i := range 3 {
		e.publish("alert", "t1", map[string]any{"n": i})
	}
	testenv.Eventually(t, 5*time.Second, "several failed attempts", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Status.FailedAttempts >= 3
	})
	s, _ := e.d.Get(w.ID)
	require.Equal(t, 3, s.Status.Pending)
	require.Equal(t, 503, s.Status.LastStatus)
	require.Contains(t, s.Status.LastError, "503")
	require.NotNil(t, s.Status.FailingSince)

	e.restart()
	s, ok := e.d.Get(w.ID)
	require.True(t, ok, "webhook kept")
	require.Equal(t, 3, s.Status.Pending, "outbox kept")
	e.publish("alert", "t1", map[string]any{"n": 3})
	r.setStatus(http.StatusOK)
	testenv.Eventually(t, 5*time.Second, "all delivered", func() bool { return len(r.received()) >= 4 })
	got := r.received()
	require.Len(t, got, 4)
	for i, g := range got {
		require.Equal(t, float64(i), g.body["alert"].(map[string]any)["n"], "in order")
	}
	require.NotEqual(t, "1", got[0].attempt, "the first event needed retries")
	testenv.Eventually(t, 5*time.Second, "outbox empty", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Status.Pending == 0 && s.Status.FailingSince == nil
	})
	e.restart()
	require.Len(t, r.received(), 4, "nothing delivered twice after a restart")
}

func TestWebhookThatKeepsFailingIsDisabled(t *testing.T) {
	cfg := testCfg()
	cfg.DisableAfter = 200 * time.Millisecond
	e := newEnv(t, cfg)
	r := newReceiver(t)
	w := e.webhook(r, "alert")
	r.setStatus(http.StatusInternalServerError)
	e.publish("alert", "t1", map[string]any{"n": 1})
	e.publish("alert", "t1", map[string]any{"n": 2})
	testenv.Eventually(t, 5*time.Second, "disabled", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Disabled
	})
	s, _ := e.d.Get(w.ID)
	require.Contains(t, s.DisabledReason, "every attempt failed since")
	require.Contains(t, s.DisabledReason, "500")
	require.Zero(t, s.Status.Pending)
	require.Equal(t, uint64(2), s.Status.Dropped)
	e.publish("alert", "t1", map[string]any{"n": 3})

	// Disabled state survives a restart; enabling resumes with new events.
	e.restart()
	s, _ = e.d.Get(w.ID)
	require.True(t, s.Disabled)
	r.setStatus(http.StatusOK)
	_, err := e.d.Enable(w.ID)
	require.NoError(t, err)
	e.publish("alert", "t1", map[string]any{"n": 4})
	testenv.Eventually(t, 5*time.Second, "delivered after enable", func() bool { return len(r.received()) == 1 })
	require.Equal(t, float64(4), r.received()[0].body["alert"].(map[string]any)["n"])

	// 410 Gone disables at once.
	r.setStatus(http.StatusGone)
	e.publish("alert", "t1", map[string]any{"n": 5})
	testenv.Eventually(t, 5*time.Second, "disabled by 410", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Disabled
	})
	s, _ = e.d.Get(w.ID)
	require.Equal(t, "the receiver answered 410 Gone", s.DisabledReason)
}

func TestOutboxIsBoundedAndOldDeliveriesExpire(t *testing.T) {
	cfg := testCfg()
	cfg.MaxPending = 3
	e := newEnv(t, cfg)
	r := newReceiver(t)
	w := e.webhook(r, "alert")
	r.setStatus(http.StatusBadGateway)
	for i := range 5 {
		e.publish("alert", "t1", map[string]any{"n": i})
	}
	testenv.Eventually(t, 5*time.Second, "oldest dropped", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Status.Dropped == 2
	})
	s, _ := e.d.Get(w.ID)
	require.Equal(t, 3, s.Status.Pending)
	r.setStatus(http.StatusOK)
	testenv.Eventually(t, 5*time.Second, "the newest three delivered", func() bool { return len(r.received()) == 3 })
	require.Equal(t, float64(2), r.received()[0].body["alert"].(map[string]any)["n"])

	cfg.MaxAge = time.Millisecond
	e.cfg = cfg
	e.restart()
	r.setStatus(http.StatusBadGateway)
	e.publish("alert", "t1", map[string]any{"n": 9})
	testenv.Eventually(t, 5*time.Second, "expired", func() bool {
		s, _ := e.d.Get(w.ID)
		return s.Status.Pending == 0 && s.Status.Dropped == 3
	})
}

func TestCreateRefusesBadWebhooks(t *testing.T) {
	cfg := testCfg()
	cfg.AllowLoopback = false
	e := newEnv(t, cfg)
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{URL: "http://127.0.0.1:9/x", Events: []string{"alert"}}, "url: 127.0.0.1 is a loopback address"},
		{Spec{URL: "http://169.254.169.254/", Events: []string{"alert"}}, "cloud metadata"},
		{Spec{URL: "http://93.184.215.14/", Events: nil}, "events: list at least one"},
		{Spec{URL: "http://93.184.215.14/", Events: []string{"reading"}}, "events[0]: readings are not delivered"},
		{Spec{URL: "http://93.184.215.14/", Events: []string{"alert", "weather"}}, `events[1]: "weather"`},
		{Spec{URL: "http://93.184.215.14/", Events: []string{"alert"}, Secret: "short"}, "secret: 16 to 256"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, _, err := e.d.Create(context.Background(), tc.spec, "")
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.ErrorContains(t, err, tc.want)
		})
	}
	w, secret, err := e.d.Create(context.Background(), Spec{URL: "http://93.184.215.14/", Events: []string{"*"}, Secret: "0123456789abcdef"}, "")
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef", secret)
	require.Equal(t, Kinds, w.Events)
}

// TestStopFilesWhatWasPublishedAfterCancel: the hub cancels its context
// before its last parts stop; events they publish meanwhile still reach the
// outbox when the dispatcher stops, and are delivered after a restart.
func TestStopFilesWhatWasPublishedAfterCancel(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), cfg: testCfg(), hub: live.New(1024)}
	ctx, cancel := context.WithCancel(context.Background())
	e.openCtx(ctx)
	r := newReceiver(t)
	e.webhook(r, "alert")
	r.setStatus(http.StatusServiceUnavailable)
	cancel()
	e.publish("alert", "t1", map[string]any{"n": 1})
	e.restart()
	r.setStatus(http.StatusOK)
	testenv.Eventually(t, 5*time.Second, "delivered after the restart", func() bool { return len(r.received()) == 1 })
}
