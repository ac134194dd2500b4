package app

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/ingest/rules"
	"github.com/telehub/telehub/internal/notify"
	"github.com/telehub/telehub/internal/testenv"
)

// startAlertHub runs a hub in dir whose webhooks may reach loopback
// receivers and retry quickly.
func startAlertHub(t *testing.T, dir string, edit func(*config.Config)) *App {
	t.Helper()
	return startHubWith(t, dir, func(cfg *config.Config) {
		cfg.Webhooks.AllowLoopback = true
		cfg.Webhooks.RetryMin, cfg.Webhooks.RetryMax = 20*time.Millisecond, 100*time.Millisecond
		if edit != nil {
			edit(cfg)
		}
	})
}

// hookReceiver is a webhook endpoint on a fixed loopback address that can
// go down and come back. It records the deliveries whose signature checks.
type hookReceiver struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	srv  *http.Server
	// secret is set once the webhook is registered.
	secret   string
	got      []map[string]any
	ids      map[string]int
	badSigns int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &hookReceiver{t: t, addr: ln.Addr().String(), ids: map[string]int{}}
	r.serve(ln)
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hooks/telehub" }

func (r *hookReceiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if notify.Verify(r.secret, req.Header.Get(notify.SignatureHeader), body, time.Now(), 5*time.Minute) != nil {
			r.badSigns++
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m["id"] != req.Header.Get("Telehub-Event-Id") {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		r.ids[m["id"].(string)]++
		r.got = append(r.got, m)
		w.WriteHeader(http.StatusNoContent)
	})}
	r.srv = srv
	go srv.Serve(ln)
}

// down stops the receiver: connections are refused.
func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// up starts the receiver again on the same address.
func (r *hookReceiver) up() {
	var ln net.Listener
	testenv.Eventually(r.t, 5*time.Second, "receiver address free again", func() bool {
		var err error
		ln, err = net.Listen("tcp", r.addr)
		return err == nil
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serve(ln)
}

// changes returns the alert changes delivered, in order, for a rule.
func (r *hookReceiver) changes(rule string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.got {
		if a, ok := m["alert"].(map[string]any); ok && a["rule_id"] == rule {
			out = append(out, a["change"].(string))
		}
	}
	return out
}

// duplicates counts events delivered more than once.
func (r *hookReceiver) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.ids {
		n += c - 1
	}
	return n
}

// alertStream collects the alert events of the live stream.
type alertStream struct {
	mu     sync.Mutex
	events []map[string]any
}

func dialAlerts(t *testing.T, a *App) *alertStream {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+a.HTTPAddr()+"/api/v1/live?token="+a.AdminToken, nil)
	require.NoError(t, err)
	resp.Body.Close()
	s := &alertStream{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil && m["kind"] == "alert" {
				s.mu.Lock()
				s.events = append(s.events, m["alert"].(map[string]any))
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

func (s *alertStream) changes(rule string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.events {
		if a["rule_id"] == rule {
			out = append(out, a["change"].(string))
		}
	}
	return out
}

// api makes a request with a token and decodes the JSON answer into out.
func api(t *testing.T, a *App, token, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, out), "%s", b)
	}
	return resp.StatusCode
}

func operatorToken(t *testing.T, a *App, role string) string {
	var out struct {
		Secret string `json:"secret"`
	}
	require.Equal(t, http.StatusCreated, api(t, a, a.AdminToken, "POST", "/api/v1/tokens", `{"name":"`+role+` on duty","role":"`+role+`"}`, &out))
	return out.Secret
}

type apiAlert struct {
	ID            string `json:"id"`
	RuleID        string `json:"rule_id"`
	DeviceID      string `json:"device_id"`
	State         string `json:"state"`
	Value         any    `json:"value"`
	AckedBy       string `json:"acked_by"`
	ResolveReason string `json:"resolve_reason"`
	History       []struct {
		Change string `json:"change"`
		By     string `json:"by"`
	} `json:"history"`
}

func alertsOf(t *testing.T, a *App, query string) []apiAlert {
	t.Helper()
	var out struct {
		Alerts []apiAlert `json:"alerts"`
	}
	require.Equal(t, http.StatusOK, api(t, a, a.AdminToken, "GET", "/api/v1/alerts?"+query, "", &out))
	return out.Alerts
}

func registerWebhook(t *testing.T, a *App, r *hookReceiver) string {
	t.Helper()
	var out struct {
		Webhook notify.Webhook `json:"webhook"`
		Secret  string         `json:"secret"`
	}
	require.Equal(t, http.StatusCreated, api(t, a, a.AdminToken, "POST", "/api/v1/webhooks", `{"url":"`+r.url()+`","events":["alert"]}`, &out))
	r.mu.Lock()
	r.secret = out.Secret
	r.mu.Unlock()
	return out.Webhook.ID
}

// TestAlertLifecycleEndToEnd: a thermostat (a real MQTT client) goes above
// 28, the alert is pending and fires after its for; a local receiver gets
// each change as a signed POST; an operator acknowledges; 27 keeps it
// firing (hysteresis), 25 resolves it. Every change is on the live stream.
func TestAlertLifecycleEndToEnd(t *testing.T) {
	a := startAlertHub(t, t.TempDir(), nil)
	recv := newHookReceiver(t)
	registerWebhook(t, a, recv)
	stream := dialAlerts(t, a)

	var rule struct {
		ID string `json:"id"`
	}
	require.Equal(t, http.StatusCreated, api(t, a, a.AdminToken, "POST", "/api/v1/rules",
		`{"name":"too hot","scope":{"type":"thermostat"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28,"for":"300ms","clear_below":26},"severity":"critical"}`, &rule))
	tok := createDevice(t, a, "therm-1", "thermostat")
	c, err := connect(t, a, "therm-1", tok)
	require.NoError(t, err)

	require.NoError(t, publish(t, c, "devices/therm-1/telemetry", `{"temperature":22}`))
	require.NoError(t, publish(t, c, "devices/therm-1/telemetry", `{"temperature":29.5}`))
	testenv.Eventually(t, 5*time.Second, "alert fires after its for", func() bool {
		return slices.Equal(stream.changes(rule.ID), []string{"pending", "firing"})
	})
	firing := alertsOf(t, a, "state=firing&device=therm-1")
	require.Len(t, firing, 1)
	require.Equal(t, 29.5, firing[0].Value)
	testenv.Eventually(t, 5*time.Second, "webhook got pending and firing", func() bool {
		return slices.Equal(recv.changes(rule.ID), []string{"pending", "firing"})
	})

	// Acknowledgement: operators may, viewers may not.
	viewer, operator := operatorToken(t, a, "viewer"), operatorToken(t, a, "operator")
	require.Equal(t, http.StatusForbidden, api(t, a, viewer, "POST", "/api/v1/alerts/"+firing[0].ID+"/ack", "", nil))
	var acked apiAlert
	require.Equal(t, http.StatusOK, api(t, a, operator, "POST", "/api/v1/alerts/"+firing[0].ID+"/ack", `{"comment":"opening a window"}`, &acked))
	require.Contains(t, acked.AckedBy, "operator on duty")

	require.NoError(t, publish(t, c, "devices/therm-1/telemetry", `{"temperature":27}`))
	require.NoError(t, publish(t, c, "devices/therm-1/telemetry", `{"temperature":25}`))
	want := []string{"pending", "firing", "acknowledged", "resolved"}
	testenv.Eventually(t, 5*time.Second, "resolved on the live stream", func() bool { return slices.Equal(stream.changes(rule.ID), want) })
	testenv.Eventually(t, 5*time.Second, "every change delivered", func() bool { return slices.Equal(recv.changes(rule.ID), want) })

	got := alertsOf(t, a, "rule="+rule.ID)
	require.Len(t, got, 1, "one alert for the rule and device")
	var full apiAlert
	require.Equal(t, http.StatusOK, api(t, a, a.AdminToken, "GET", "/api/v1/alerts/"+got[0].ID, "", &full))
	require.Equal(t, "resolved", full.State)
	require.Equal(t, 25.0, full.Value)
	var hist []string
	for _, h := range full.History {
		hist = append(hist, h.Change)
	}
	require.Equal(t, want, hist)
	require.Contains(t, full.History[2].By, "operator on duty")
	require.Zero(t, recv.badSigns)
	require.Zero(t, recv.duplicates())

	m, err := testenv.Metrics("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	require.Equal(t, 1.0, m[`telehub_alert_changes_total{change="firing"}`])
	require.Equal(t, 4.0, m[`telehub_webhook_deliveries_total{result="delivered"}`])
	require.Equal(t, 1.0, m["telehub_rules"])
}

// TestAlertsAndWebhooksSurviveRestart: with the receiver down, alerts fire
// (a threshold and "offline for 300ms"); the hub restarts; the alerts are
// still firing under the same IDs, and once the receiver is back every
// undelivered change arrives, signed, exactly once.
func TestAlertsAndWebhooksSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	a := startAlertHub(t, dir, nil)
	recv := newHookReceiver(t)
	wh := registerWebhook(t, a, recv)
	recv.down()

	for _, js := range []string{
		`{"id":"hot","name":"too hot","scope":{"device":"therm-2"},"condition":{"kind":"threshold","field":"temperature","op":">","value":28}}`,
		`{"id":"gone","name":"offline","scope":{"type":"thermostat"},"condition":{"kind":"offline","for":"300ms"},"severity":"critical"}`,
	} {
		require.Equal(t, http.StatusCreated, api(t, a, a.AdminToken, "POST", "/api/v1/rules", js, nil))
	}
	tok := createDevice(t, a, "therm-2", "thermostat")
	c, err := connect(t, a, "therm-2", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/therm-2/telemetry", `{"temperature":31}`))
	c.Disconnect(100)
	testenv.Eventually(t, 5*time.Second, "both alerts firing", func() bool { return len(alertsOf(t, a, "state=firing")) == 2 })
	before := alertsOf(t, a, "state=firing")
	testenv.Eventually(t, 5*time.Second, "deliveries failing", func() bool {
		var w notify.Webhook
		api(t, a, a.AdminToken, "GET", "/api/v1/webhooks/"+wh, "", &w)
		return w.Status.Pending == 2 && w.Status.FailedAttempts > 0
	})

	a.Stop()
	a = startAlertHub(t, dir, nil)
	after := alertsOf(t, a, "state=firing")
	require.ElementsMatch(t, ids(before), ids(after), "the same alerts still firing")
	var w notify.Webhook
	require.Equal(t, http.StatusOK, api(t, a, a.AdminToken, "GET", "/api/v1/webhooks/"+wh, "", &w))
	require.Equal(t, 2, w.Status.Pending, "undelivered changes kept")

	recv.up()
	testenv.Eventually(t, 10*time.Second, "undelivered changes delivered", func() bool {
		return slices.Equal(recv.changes("hot"), []string{"firing"}) && slices.Equal(recv.changes("gone"), []string{"firing"})
	})

	// The device comes back: offline resolves, and so does the threshold.
	c, err = connect(t, a, "therm-2", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/therm-2/telemetry", `{"temperature":20}`))
	testenv.Eventually(t, 5*time.Second, "resolutions delivered", func() bool {
		return slices.Equal(recv.changes("hot"), []string{"firing", "resolved"}) && slices.Equal(recv.changes("gone"), []string{"firing", "resolved"})
	})
	require.Zero(t, recv.badSigns)
	require.Zero(t, recv.duplicates())
	require.Empty(t, alertsOf(t, a, "state=firing,pending"))
}

func ids(as []apiAlert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

// TestAbsenceRuleAndSilence: "no data for 300ms" fires for a device that
// goes quiet; while its rule is silenced, alert changes still show on the
// live stream but no webhook is sent.
func TestAbsenceRuleAndSilence(t *testing.T) {
	a := startAlertHub(t, t.TempDir(), nil)
	recv := newHookReceiver(t)
	registerWebhook(t, a, recv)
	stream := dialAlerts(t, a)
	tok := createDevice(t, a, "wear-1", "wearable")
	require.Equal(t, http.StatusCreated, api(t, a, a.AdminToken, "POST", "/api/v1/rules",
		`{"id":"quiet","name":"no data","scope":{"device":"wear-1"},"condition":{"kind":"absence","for":"300ms"}}`, nil))
	testenv.Eventually(t, 5*time.Second, "no data fires", func() bool { return slices.Equal(recv.changes("quiet"), []string{"firing"}) })

	operator := operatorToken(t, a, "operator")
	var r struct {
		SilencedUntil *time.Time `json:"silenced_until"`
	}
	require.Equal(t, http.StatusOK, api(t, a, operator, "POST", "/api/v1/rules/quiet/silence", `{"for":"1h"}`, &r))
	require.NotNil(t, r.SilencedUntil)
	c, err := connect(t, a, "wear-1", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/wear-1/telemetry", `{"heart_rate":70}`))
	testenv.Eventually(t, 5*time.Second, "resolved and fired again, on the live stream", func() bool {
		return slices.Equal(stream.changes("quiet"), []string{"firing", "resolved", "firing"})
	})
	require.Equal(t, []string{"firing"}, recv.changes("quiet"), "silenced: no webhook")
	require.Equal(t, http.StatusOK, api(t, a, operator, "DELETE", "/api/v1/rules/quiet/silence", "", nil))
	testenv.Eventually(t, 5*time.Second, "announced when the silence ends", func() bool {
		return slices.Equal(recv.changes("quiet"), []string{"firing", "unsilenced"})
	})
}

// TestAlertingAPIRefusesBadInput: rules, alerts and webhooks answer bad
// input with problem JSON that says what and where, and roles gate them.
func TestAlertingAPIRefusesBadInput(t *testing.T) {
	a := startAlertHub(t, t.TempDir(), func(c *config.Config) {
		c.Webhooks.AllowLoopback = false
		c.Rules = append(c.Rules, mustSpec(t, `{"id":"declared","name":"from the file","scope":{},"condition":{"kind":"offline","for":"5m"}}`))
	})
	viewer := operatorToken(t, a, "viewer")
	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
		detail                          string
	}{
		{"bad duration", "", "POST", "/api/v1/rules", `{"name":"r","scope":{},"condition":{"kind":"threshold","field":"t","op":">","value":1,"for":"5 minutes"}}`, 400, `condition.for: "5 minutes" is not a duration`},
		{"unknown field", "", "POST", "/api/v1/rules", `{"name":"r","scope":{},"condition":{"kind":"offline","for":"1m","treshold":1}}`, 400, `unknown field "treshold"`},
		{"hysteresis on the wrong side", "", "POST", "/api/v1/rules", `{"name":"r","scope":{},"condition":{"kind":"threshold","field":"t","op":">","value":28,"clear_below":30}}`, 400, "condition.clear_below"},
		{"unknown webhook", "", "POST", "/api/v1/rules", `{"name":"r","scope":{},"condition":{"kind":"offline","for":"1m"},"notify":["wh-nope"]}`, 400, "notify[0]: no webhook with id wh-nope"},
		{"viewer may not write rules", viewer, "POST", "/api/v1/rules", `{"name":"r","scope":{},"condition":{"kind":"offline","for":"1m"}}`, 403, "admin"},
		{"declared rules are read-only", "", "DELETE", "/api/v1/rules/declared", "", 409, "config file"},
		{"unknown rule", "", "GET", "/api/v1/rules/nope", "", 404, "nope"},
		{"silence without a time", "", "POST", "/api/v1/rules/declared/silence", `{}`, 400, "for"},
		{"bad alert state", "", "GET", "/api/v1/alerts?state=burning", "", 400, `"burning"`},
		{"unknown alert", "", "POST", "/api/v1/alerts/nope/ack", "", 404, "nope"},
		{"metadata webhook", "", "POST", "/api/v1/webhooks", `{"url":"http://169.254.169.254/latest","events":["alert"]}`, 400, "cloud metadata"},
		{"loopback webhook", "", "POST", "/api/v1/webhooks", `{"url":"http://127.0.0.1:8080/","events":["alert"]}`, 400, "loopback"},
		{"reading webhook", "", "POST", "/api/v1/webhooks", `{"url":"http://10.0.0.9/","events":["reading"]}`, 400, "live stream"},
		{"viewer may not list webhooks", viewer, "GET", "/api/v1/webhooks", "", 403, "admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token
			if tok == "" {
				tok = a.AdminToken
			}
			var p struct {
				Detail string `json:"detail"`
			}
			require.Equal(t, tc.status, api(t, a, tok, tc.method, tc.path, tc.body, &p))
			require.Contains(t, p.Detail, tc.detail)
		})
	}
	var list struct {
		Rules []struct {
			ID, Source string
		} `json:"rules"`
	}
	require.Equal(t, http.StatusOK, api(t, a, viewer, "GET", "/api/v1/rules", "", &list))
	require.Len(t, list.Rules, 1)
	require.Equal(t, "config", list.Rules[0].Source)
}

func mustSpec(t *testing.T, js string) rules.Spec {
	t.Helper()
	s, err := rules.ParseRule([]byte(js))
	require.NoError(t, err)
	return s
}

// TestConfigFileRulesSayWhatAndWhere: a rule in the config file that is
// wrong stops the hub from starting with the rule's index, id and field.
func TestConfigFileRulesSayWhatAndWhere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telehub.yaml")
	good := "rules:\n  - id: hot\n    name: too hot\n    scope: {type: thermostat}\n    condition: {kind: threshold, field: temperature, op: '>', value: 28, for: 5m, clear_below: 26}\n    severity: critical\n"
	require.NoError(t, os.WriteFile(path, []byte(good+"  - id: quiet\n    name: no data\n    scope: {}\n    condition: {kind: absence, for: 2 minutes}\n"), 0o600))
	_, err := config.Load("serve", []string{"--config", path}, func(string) string { return "" }, io.Discard)
	require.ErrorContains(t, err, `rules[1] (id "quiet"): condition.for: "2 minutes" is not a duration`)

	require.NoError(t, os.WriteFile(path, []byte(good+"  - id: x\n    name: x\n    scope: {}\n    condition: {kind: offline, for: 1m, colour: red}\n"), 0o600))
	_, err = config.Load("serve", []string{"--config", path}, func(string) string { return "" }, io.Discard)
	require.ErrorContains(t, err, "line 10: field colour not found")

	require.NoError(t, os.WriteFile(path, []byte(good), 0o600))
	cfg, err := config.Load("serve", []string{"--config", path}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.Len(t, cfg.Rules, 1)
	require.Equal(t, 26.0, *cfg.Rules[0].Condition.ClearBelow)
	require.Equal(t, 28, cfg.Rules[0].Condition.Value, "YAML integers are accepted as numbers")
}
