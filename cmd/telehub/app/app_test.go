package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	firmwaresim "github.com/telehub/telehub/firmware-sim"
	"github.com/telehub/telehub/internal/testenv"
)

// startHub runs a hub on loopback ports with a temporary data directory;
// with db set it stores in that InfluxDB database.
func startHub(t *testing.T, db *testenv.Influx) *App {
	t.Helper()
	return startHubIn(t, t.TempDir(), db)
}

func startHubIn(t *testing.T, dir string, db *testenv.Influx) *App {
	t.Helper()
	return startHubWith(t, dir, func(cfg *config.Config) {
		if db != nil {
			cfg.Influx.URL, cfg.Influx.Bucket = db.URL, db.Database
		}
	})
}

// startHubWith runs a hub in dir on loopback ports, storing in the embedded
// store unless edit (which may be nil) changes its configuration. Every
// test hub is built here.
func startHubWith(t *testing.T, dir string, edit func(*config.Config)) *App {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Writer.FlushInterval = 50 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	require.NoError(t, cfg.Validate())
	a, err := Start(context.Background(), cfg, testenv.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { a.Stop() })
	return a
}

// liveClient collects the readings a WebSocket client receives.
type liveClient struct {
	mu      sync.Mutex
	perDev  map[string]int
	lastSeq uint64
	seqOK   bool
	fields  map[string]map[string]any
}

func dialLive(t *testing.T, a *App) *liveClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+a.HTTPAddr()+"/api/v1/live?token="+a.AdminToken, nil)
	require.NoError(t, err)
	resp.Body.Close()
	c := &liveClient{perDev: map[string]int{}, seqOK: true, fields: map[string]map[string]any{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m struct {
				Seq      uint64         `json:"seq"`
				Kind     string         `json:"kind"`
				DeviceID string         `json:"device_id"`
				TS       time.Time      `json:"ts"`
				Fields   map[string]any `json:"fields"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				panic(fmt.Sprintf("live message is not JSON: %s", b))
			}
			c.mu.Lock()
			if m.Seq <= c.lastSeq {
				c.seqOK = false
			}
			c.lastSeq = m.Seq
			if m.Kind == "reading" && !m.TS.IsZero() {
				c.perDev[m.DeviceID]++
				c.fields[m.DeviceID] = m.Fields
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return c
}

func (c *liveClient) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.perDev[id]
}

func runFleet(t *testing.T, a *App) firmwaresim.Stats {
	t.Helper()
	cfg := firmwaresim.DefaultConfig()
	cfg.HubURL = "http://" + a.HTTPAddr()
	cfg.MQTTURL = "tcp://" + a.MQTTAddr()
	cfg.Token = a.AdminToken
	cfg.Thermostats, cfg.Wearables = 10, 10
	cfg.Interval = 100 * time.Millisecond
	cfg.Duration = 3 * time.Second
	cfg.QoS = 1
	f, err := firmwaresim.New(cfg, testenv.Logger(t))
	require.NoError(t, err)
	require.NoError(t, f.Run(context.Background()))
	st := f.Stats()
	require.Len(t, st.Devices, 20)
	require.Zero(t, st.Errors, "no publish of a healthy fleet may fail")
	require.Greater(t, st.Acked, int64(200))
	return st
}

// TestEndToEndInflux: 20 simulated devices publish QoS 1; every acknowledged
// reading is in InfluxDB exactly once and reached a WebSocket client.
func TestEndToEndInflux(t *testing.T) {
	db := testenv.NewInflux(t)
	a := startHub(t, &db)
	ws := dialLive(t, a)
	st := runFleet(t, a)

	stored := func() map[string]int {
		r, err := db.InfluxQL(`SELECT count(rssi) FROM telemetry GROUP BY device_id`)
		require.NoError(t, err)
		out := map[string]int{}
		for _, s := range r.Results[0].Series {
			out[s.Tags["device_id"]] = int(s.Values[0][1].(float64))
		}
		return out
	}
	testenv.Eventually(t, 20*time.Second, "every acknowledged reading stored in InfluxDB", func() bool {
		got := stored()
		for _, d := range st.Devices {
			if got[d.ID] < int(d.Acked) {
				return false
			}
		}
		return true
	})
	got := stored()
	for _, d := range st.Devices {
		require.Equal(t, int(d.Acked), got[d.ID], "device %s: stored exactly what was acknowledged", d.ID)
		testenv.Eventually(t, 5*time.Second, "live stream delivered "+d.ID, func() bool { return ws.count(d.ID) >= int(d.Acked) })
	}
	require.True(t, ws.seqOK, "seq increases monotonically")

	// Tags and types as documented: device_type tag, floats, booleans kept.
	r, err := db.InfluxQL(`SELECT last(heating) FROM telemetry WHERE device_type = 'thermostat'`)
	require.NoError(t, err)
	rows := r.Rows()
	require.NotEmpty(t, rows)
	_, isBool := rows[0][1].(bool)
	require.True(t, isBool, "heating is stored as a boolean, got %T", rows[0][1])
}

// TestEndToEndEmbeddedStore is the same path with no InfluxDB configured.
func TestEndToEndEmbeddedStore(t *testing.T) {
	a := startHub(t, nil)
	ws := dialLive(t, a)
	st := runFleet(t, a)
	from, to := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	for _, d := range st.Devices {
		testenv.Eventually(t, 10*time.Second, "stored "+d.ID, func() bool {
			s, err := a.Store().Query(d.ID, "rssi", from, to)
			require.NoError(t, err)
			return len(s) >= int(d.Acked)
		})
		s, err := a.Store().Query(d.ID, "rssi", from, to)
		require.NoError(t, err)
		require.Len(t, s, int(d.Acked), "device %s: stored exactly what was acknowledged", d.ID)
		testenv.Eventually(t, 5*time.Second, "live stream delivered "+d.ID, func() bool { return ws.count(d.ID) >= int(d.Acked) })
	}

	// The device list shows the latest readings.
	var list struct {
		Devices []struct {
			ID     string         `json:"id"`
			Type   string         `json:"type"`
			Latest map[string]any `json:"latest"`
		} `json:"devices"`
	}
	apiGet(t, a, "/api/v1/devices", &list)
	require.Len(t, list.Devices, 20)
	for _, d := range list.Devices {
		require.Contains(t, d.Latest, "rssi", d.ID)
		if d.Type == "thermostat" {
			require.Contains(t, d.Latest, "temperature")
		}
	}
}

func apiGet(t *testing.T, a *App, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// createDevice registers a device through the API and returns its token.
func createDevice(t *testing.T, a *App, id, typ string) string {
	t.Helper()
	body := fmt.Sprintf(`{"id":%q,"type":%q}`, id, typ)
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.HTTPAddr()+"/api/v1/devices", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var out struct {
		Token string `json:"token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotEmpty(t, out.Token)
	return out.Token
}

func connect(t *testing.T, a *App, user, pass string) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID(user + "-test").
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func publish(t *testing.T, c paho.Client, topic, payload string) error {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("publish not acknowledged")
	}
	return tok.Error()
}

// storedValues returns the temperature values stored for a device.
func storedValues(t *testing.T, a *App, id string) []float64 {
	s, err := a.Store().Query(id, "temperature", time.Now().Add(-48*time.Hour), time.Now().Add(48*time.Hour))
	require.NoError(t, err)
	var out []float64
	for _, v := range s {
		out = append(out, v.Value.Num)
	}
	return out
}

func TestAuthRefusesWrongTokenUnknownDeviceAndForeignTopics(t *testing.T) {
	a := startHub(t, nil)
	tokA := createDevice(t, a, "dev-a", "thermostat")
	tokB := createDevice(t, a, "dev-b", "thermostat")

	_, err := connect(t, a, "dev-a", tokB)
	require.Error(t, err, "another device's token")
	_, err = connect(t, a, "ghost", tokA)
	require.Error(t, err, "unknown device")
	_, err = connect(t, a, "", "")
	require.Error(t, err, "anonymous")

	ca, err := connect(t, a, "dev-a", tokA)
	require.NoError(t, err)
	// QoS 0 to a foreign topic is dropped; QoS 1 also costs the MQTT 3 session.
	require.NoError(t, ca.Publish("devices/dev-b/telemetry", 0, false, `{"temperature":99}`).Error())
	_ = publish(t, ca, "devices/dev-b/telemetry", `{"temperature":98}`)
	sub := ca.Subscribe("devices/dev-b/#", 1, nil)
	sub.WaitTimeout(5 * time.Second)

	// A marker from dev-b itself, stored after anything dev-a could have slipped in.
	cb, err := connect(t, a, "dev-b", tokB)
	require.NoError(t, err)
	require.NoError(t, publish(t, cb, "devices/dev-b/telemetry", `{"temperature":21}`))
	testenv.Eventually(t, 10*time.Second, "marker stored", func() bool { return len(storedValues(t, a, "dev-b")) > 0 })
	require.Equal(t, []float64{21}, storedValues(t, a, "dev-b"), "nothing dev-a sent on dev-b's topic was stored")
	require.Empty(t, storedValues(t, a, "dev-a"))

	if st, ok := sub.(*paho.SubscribeToken); ok && len(st.Result()) > 0 {
		require.NotEqual(t, byte(1), st.Result()["devices/dev-b/#"], "subscription to a foreign topic must not be granted")
	}
}

func TestBadPayloadIsRefusedAndCostsNothingElse(t *testing.T) {
	a := startHub(t, nil)
	tok := createDevice(t, a, "dev-bad", "thermostat")
	c, err := connect(t, a, "dev-bad", tok)
	require.NoError(t, err)
	for _, p := range []string{`not json`, `{"temperature":[1,2]}`, `[]`, `{"ts":"yesterday","temperature":1}`} {
		require.NoError(t, publish(t, c, "devices/dev-bad/telemetry", p), "MQTT 3 gets a PUBACK: %s", p)
	}
	require.NoError(t, publish(t, c, "devices/dev-bad/telemetry", `{"temperature":22.5}`))
	testenv.Eventually(t, 10*time.Second, "good reading stored", func() bool { return len(storedValues(t, a, "dev-bad")) > 0 })
	require.Equal(t, []float64{22.5}, storedValues(t, a, "dev-bad"))

	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `telehub_ingest_rejected_total{reason="decode"} 4`)
}

// TestMosquittoPub proves that a client we did not write works: Debian's
// mosquitto_pub publishes a reading that is stored and streamed, and is
// refused with a wrong password.
func TestMosquittoPub(t *testing.T) {
	bin := testenv.Tool(t, "mosquitto_pub")
	a := startHub(t, nil)
	ws := dialLive(t, a)
	tok := createDevice(t, a, "mosq-1", "thermostat")
	host, port, _ := strings.Cut(a.MQTTAddr(), ":")
	run := func(pass, payload string) error {
		cmd := exec.Command(bin, "-h", host, "-p", port, "-i", "mosq-1", "-u", "mosq-1", "-P", pass, "-q", "1",
			"-t", "devices/mosq-1/telemetry", "-m", payload)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	require.Error(t, run("wrong", `{"temperature":1}`))
	ts := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	require.NoError(t, run(tok, `{"ts":"`+ts.Format(time.RFC3339)+`","temperature":19.25,"heating":false}`))
	testenv.Eventually(t, 10*time.Second, "stored", func() bool { return len(storedValues(t, a, "mosq-1")) > 0 })
	s, err := a.Store().Query("mosq-1", "temperature", ts, ts.Add(time.Nanosecond))
	require.NoError(t, err)
	require.Len(t, s, 1, "the device's timestamp is kept")
	require.Equal(t, 19.25, s[0].Value.Num)
	require.Equal(t, []float64{19.25}, storedValues(t, a, "mosq-1"), "the wrong password stored nothing")
	testenv.Eventually(t, 5*time.Second, "streamed", func() bool { return ws.count("mosq-1") == 1 })
}

func TestAdminTokenFileAndAPIAuth(t *testing.T) {
	dir := t.TempDir()
	a := startHubIn(t, dir, nil)
	st, err := os.Stat(filepath.Join(dir, "admin.token"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	require.NoError(t, err)
	require.Equal(t, a.AdminToken, strings.TrimSpace(string(b)))
	require.Contains(t, a.DashboardURL(), "/?token="+a.AdminToken)

	base := "http://" + a.HTTPAddr()
	for _, tc := range []struct {
		name, path, token string
		status            int
		ctype             string
	}{
		{"healthz", "/healthz", "", 200, "text/plain"},
		{"readyz", "/readyz", "", 200, "text/plain"},
		{"page", "/", "", 200, "text/html"},
		{"no token", "/api/v1/devices", "", 401, "application/problem+json"},
		{"wrong token", "/api/v1/devices", "nope", 401, "application/problem+json"},
		{"admin", "/api/v1/devices", a.AdminToken, 200, "application/json"},
		{"unknown device", "/api/v1/devices/ghost", a.AdminToken, 404, "application/problem+json"},
		{"unknown endpoint", "/api/v1/nothing", a.AdminToken, 404, "application/problem+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			require.Contains(t, resp.Header.Get("Content-Type"), tc.ctype)
		})
	}

	for _, body := range []string{`{"id":"a/b","type":"thermostat"}`, `{"id":"x","type":"thermostat","colour":"red"}`, `nope`} {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/devices", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
	}

	// The same data directory keeps the same admin token and devices.
	createDevice(t, a, "keeper", "wearable")
	a.Stop()
	b2 := startHubIn(t, dir, nil)
	require.Equal(t, a.AdminToken, b2.AdminToken)
	var list struct {
		Devices []struct{ ID string } `json:"devices"`
	}
	apiGet(t, b2, "/api/v1/devices", &list)
	require.Len(t, list.Devices, 1)
}

func TestRolesGateTheAPI(t *testing.T) {
	a := startHub(t, nil)
	base := "http://" + a.HTTPAddr()
	call := func(method, path, token, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
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
	secrets := map[string]string{}
	ids := map[string]string{}
	for _, role := range []string{"viewer", "operator", "admin"} {
		status, out := call("POST", "/api/v1/tokens", a.AdminToken, `{"name":"`+role+` token","role":"`+role+`"}`)
		require.Equal(t, http.StatusCreated, status)
		secrets[role] = out["secret"].(string)
		ids[role] = out["token"].(map[string]any)["id"].(string)
	}
	status, _ := call("POST", "/api/v1/tokens", a.AdminToken, `{"name":"x","role":"root"}`)
	require.Equal(t, http.StatusBadRequest, status)
	status, _ = call("GET", "/api/v1/whoami", "", "")
	require.Equal(t, http.StatusUnauthorized, status)

	for _, tc := range []struct {
		role         string
		list, create int
	}{
		{"viewer", 200, 403},
		{"operator", 200, 403},
		{"admin", 200, 201},
	} {
		t.Run(tc.role, func(t *testing.T) {
			status, _ := call("GET", "/api/v1/devices", secrets[tc.role], "")
			require.Equal(t, tc.list, status)
			status, out := call("POST", "/api/v1/devices", secrets[tc.role], `{"id":"by-`+tc.role+`","type":"thermostat"}`)
			require.Equal(t, tc.create, status, out)
			status, _ = call("GET", "/api/v1/tokens", secrets[tc.role], "")
			require.Equal(t, map[bool]int{true: 200, false: 403}[tc.role == "admin"], status)
			status, me := call("GET", "/api/v1/whoami", secrets[tc.role], "")
			require.Equal(t, 200, status)
			require.Equal(t, tc.role, me["role"], "whoami names the token's role")
			require.Equal(t, ids[tc.role], me["id"])
			require.NotContains(t, me, "hash")
		})
	}
	status, _ = call("DELETE", "/api/v1/tokens/"+ids["viewer"], a.AdminToken, "")
	require.Equal(t, http.StatusNoContent, status)
	status, _ = call("GET", "/api/v1/devices", secrets["viewer"], "")
	require.Equal(t, http.StatusUnauthorized, status, "a revoked token stops working")
}

func TestPresenceAndTakeover(t *testing.T) {
	a := startHub(t, nil)
	tok := createDevice(t, a, "pres-1", "wearable")
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+a.HTTPAddr()+"/api/v1/live?token="+a.AdminToken, nil)
	require.NoError(t, err)
	resp.Body.Close()
	defer conn.Close()

	type status struct {
		Online     bool `json:"online"`
		Connection *struct {
			ClientID string `json:"client_id"`
			Protocol string `json:"protocol"`
		} `json:"connection"`
	}
	get := func() status {
		var s status
		apiGet(t, a, "/api/v1/devices/pres-1", &s)
		return s
	}
	require.False(t, get().Online)

	lost := make(chan struct{})
	opts := paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID("first").
		SetUsername("pres-1").SetPassword(tok).SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	first := paho.NewClient(opts)
	require.True(t, first.Connect().WaitTimeout(5*time.Second))
	// mochi reports the session after it has sent the CONNACK.
	var s status
	testenv.Eventually(t, 5*time.Second, "online", func() bool { s = get(); return s.Online })
	require.Equal(t, "first", s.Connection.ClientID)
	require.Equal(t, "3.1.1", s.Connection.Protocol)

	second, err := connect(t, a, "pres-1", tok) // client ID pres-1-test
	require.NoError(t, err)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the older connection of the device was not closed")
	}
	testenv.Eventually(t, 5*time.Second, "the new connection is the device's", func() bool {
		s = get()
		return s.Connection != nil && s.Connection.ClientID == "pres-1-test"
	})
	require.True(t, s.Online, "the takeover leaves the device online")

	second.Disconnect(100)
	testenv.Eventually(t, 5*time.Second, "offline after disconnect", func() bool { return !get().Online })

	// The stream said so: online, online (takeover), offline.
	var events []bool
	for len(events) < 3 {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := conn.ReadMessage()
		require.NoError(t, err)
		var m struct {
			Kind     string `json:"kind"`
			DeviceID string `json:"device_id"`
			Presence struct {
				Online bool `json:"online"`
			} `json:"presence"`
		}
		require.NoError(t, json.Unmarshal(b, &m))
		if m.Kind == "presence" && m.DeviceID == "pres-1" {
			events = append(events, m.Presence.Online)
		}
	}
	require.Equal(t, []bool{true, true, false}, events)
}

// QoS 0 readings go into the log without waiting for its fsync, and are
// stored and streamed like the others.
func TestQoS0ReadingsAreStored(t *testing.T) {
	a := startHub(t, nil)
	ws := dialLive(t, a)
	tok := createDevice(t, a, "q0-1", "thermostat")
	c, err := connect(t, a, "q0-1", tok)
	require.NoError(t, err)
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 200 {
		tk := c.Publish("devices/q0-1/telemetry", 0, false, fmt.Sprintf(`{"ts":%d,"temperature":%d}`, base+int64(i), i))
		require.True(t, tk.WaitTimeout(5*time.Second))
	}
	testenv.Eventually(t, 10*time.Second, "200 QoS 0 readings stored", func() bool { return len(storedValues(t, a, "q0-1")) == 200 })
	testenv.Eventually(t, 5*time.Second, "and streamed", func() bool { return ws.count("q0-1") == 200 })
	require.Equal(t, 199.0, storedValues(t, a, "q0-1")[199])
}

// A graceful stop drains the log into the store: nothing is left for the
// next start.
func TestStopDrainsTheLog(t *testing.T) {
	dir := t.TempDir()
	a := startHubWith(t, dir, func(cfg *config.Config) {
		cfg.Writer.FlushInterval = time.Hour // nothing is written before the stop
		cfg.Writer.BatchSize = 1000
	})
	tok := createDevice(t, a, "drain-1", "thermostat")
	c, err := connect(t, a, "drain-1", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/drain-1/telemetry", `{"temperature":1}`))
	require.NoError(t, publish(t, c, "devices/drain-1/telemetry", `{"temperature":2}`))
	c.Disconnect(0)
	a.Stop()

	b := startHubIn(t, dir, nil)
	require.Equal(t, []float64{1, 2}, storedValues(t, b, "drain-1"))
	require.Equal(t, 0.0, scrape(t, b, "telehub_log_pending_readings"), "nothing left in the log")
}
