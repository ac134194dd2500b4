package app

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/internal/testenv"
)

// startBrokerHub runs a hub on loopback ports after edit has adjusted its
// configuration.
func startBrokerHub(t *testing.T, edit func(*config.Config)) *App {
	t.Helper()
	return startHubWith(t, t.TempDir(), edit)
}

// transportHub is a hub with MQTT over TLS, WebSocket and secure WebSocket;
// with mutual set, its TLS listener requires client certificates.
func transportHub(t *testing.T, pki *testenv.PKI, mutual bool) *App {
	t.Helper()
	cert, key := pki.Server(t, "hub")
	return startBrokerHub(t, func(c *config.Config) {
		c.MQTT.TLSAddr, c.MQTT.WSAddr, c.MQTT.WSSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		c.MQTT.TLSCert, c.MQTT.TLSKey = cert, key
		if mutual {
			c.MQTT.ClientCA = pki.CAFile
		}
	})
}

// apiRequest makes an API request with the admin token, or with token if given.
func apiRequest(t *testing.T, a *App, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	if token == "" {
		token = a.AdminToken
	}
	req, _ := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestIntegrationsAPI: an admin creates integration credentials with topic
// ACLs; the integration connects with them, subscribes to every device's
// telemetry, and is cut off when it is deleted.
func TestIntegrationsAPI(t *testing.T) {
	a := startHub(t, nil)
	devTok := createDevice(t, a, "kitchen", "thermostat")
	status, out := apiRequest(t, a, "POST", "/api/v1/tokens", "", `{"name":"op","role":"operator"}`)
	require.Equal(t, http.StatusCreated, status)
	operator := out["secret"].(string)

	for _, tc := range []struct {
		name, token, body string
		status            int
	}{
		{"operator may not", operator, `{"id":"ha","subscribe":["devices/+/telemetry"]}`, http.StatusForbidden},
		{"no filters", "", `{"id":"ha"}`, http.StatusBadRequest},
		{"bad filter", "", `{"id":"ha","subscribe":["devices/#/x"]}`, http.StatusBadRequest},
		{"shared filter", "", `{"id":"ha","subscribe":["$share/g/#"]}`, http.StatusBadRequest},
		{"bad id", "", `{"id":"h/a","subscribe":["#"]}`, http.StatusBadRequest},
		{"unknown field", "", `{"id":"ha","subscribe":["#"],"acl":"all"}`, http.StatusBadRequest},
		{"a device's name", "", `{"id":"kitchen","subscribe":["#"]}`, http.StatusConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := apiRequest(t, a, "POST", "/api/v1/integrations", tc.token, tc.body)
			require.Equal(t, tc.status, status, out)
			require.NotEmpty(t, out["title"], "problem JSON")
		})
	}
	status, out = apiRequest(t, a, "POST", "/api/v1/integrations", "", `{"id":"ha","publish":["homeassistant/#"],"subscribe":["devices/+/telemetry","homeassistant/#"]}`)
	require.Equal(t, http.StatusCreated, status, out)
	secret := out["secret"].(string)
	require.Equal(t, "ha", out["integration"].(map[string]any)["id"])
	require.NotContains(t, fmt.Sprint(out["integration"]), secret)
	status, _ = apiRequest(t, a, "POST", "/api/v1/integrations", "", `{"id":"ha","subscribe":["#"]}`)
	require.Equal(t, http.StatusConflict, status)
	status, out = apiRequest(t, a, "GET", "/api/v1/integrations", "", "")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, out["integrations"], 1)
	status, out = apiRequest(t, a, "GET", "/api/v1/integrations/ha", "", "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []any{"devices/+/telemetry", "homeassistant/#"}, out["subscribe"])
	status, _ = apiRequest(t, a, "GET", "/api/v1/integrations", operator, "")
	require.Equal(t, http.StatusForbidden, status)

	got := make(chan string, 10)
	lost := make(chan struct{})
	ha := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr()).SetClientID("home-assistant").
		SetUsername("ha").SetPassword(secret).SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) }))
	require.True(t, ha.Connect().WaitTimeout(5*time.Second))
	defer ha.Disconnect(50)
	sub := ha.Subscribe("devices/+/telemetry", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	require.True(t, sub.WaitTimeout(5*time.Second))
	require.Equal(t, byte(1), sub.(*paho.SubscribeToken).Result()["devices/+/telemetry"])

	dev, err := connect(t, a, "kitchen", devTok)
	require.NoError(t, err)
	require.NoError(t, publish(t, dev, "devices/kitchen/telemetry", `{"temperature":21}`))
	select {
	case m := <-got:
		require.Equal(t, `devices/kitchen/telemetry {"temperature":21}`, m)
	case <-time.After(5 * time.Second):
		t.Fatal("the integration did not receive the device's telemetry")
	}
	testenv.Eventually(t, 10*time.Second, "stored", func() bool { return len(storedValues(t, a, "kitchen")) == 1 })

	status, _ = apiRequest(t, a, "DELETE", "/api/v1/integrations/ha", "", "")
	require.Equal(t, http.StatusNoContent, status)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("deleting the integration did not disconnect it")
	}
	status, _ = apiRequest(t, a, "DELETE", "/api/v1/integrations/ha", "", "")
	require.Equal(t, http.StatusNotFound, status)
	_, err = connect(t, a, "ha", secret)
	require.Error(t, err)
}

// TestHTTPS: with http.tls_cert and http.tls_key the API, the live stream
// and the dashboard are served over TLS only.
func TestHTTPS(t *testing.T) {
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "https")
	a := startBrokerHub(t, func(c *config.Config) { c.HTTP.TLSCert, c.HTTP.TLSKey = cert, key })
	require.True(t, strings.HasPrefix(a.DashboardURL(), "https://"), a.DashboardURL())
	tc := &tls.Config{RootCAs: pki.Pool}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}

	req, _ := http.NewRequest(http.MethodGet, "https://"+a.HTTPAddr()+"/api/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = hc.Get("https://" + a.HTTPAddr() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// HTTP/2 is offered by ALPN (issue #15).
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	resp, err = h2.Get("https://" + a.HTTPAddr() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "HTTP/2.0", resp.Proto)

	resp, err = (&http.Client{Timeout: 5 * time.Second}).Get("http://" + a.HTTPAddr() + "/healthz")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP is not served")
	}

	d := websocket.Dialer{TLSClientConfig: tc, HandshakeTimeout: 5 * time.Second}
	ws, wsResp, err := d.Dial("wss://"+a.HTTPAddr()+"/api/v1/live?token="+a.AdminToken, nil)
	require.NoError(t, err)
	wsResp.Body.Close()
	defer ws.Close()
	tok := createDeviceTLS(t, hc, a, "secure-1")
	c, err := connect(t, a, "secure-1", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/secure-1/telemetry", `{"temperature":5}`))
	for {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := ws.ReadMessage()
		require.NoError(t, err, "reading arrives over wss")
		if strings.Contains(string(b), `"reading"`) && strings.Contains(string(b), "secure-1") {
			break
		}
	}
}

func createDeviceTLS(t *testing.T, hc *http.Client, a *App, id string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+a.HTTPAddr()+"/api/v1/devices", strings.NewReader(`{"id":"`+id+`","type":"thermostat"}`))
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var out struct{ Token string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Token
}

// TestBrokerMetrics: /metrics shows connections, connects, auth failures
// and limit hits.
func TestBrokerMetrics(t *testing.T) {
	a := startBrokerHub(t, func(c *config.Config) { c.MQTT.MessageRate, c.MQTT.MessageBurst = 0.001, 1 })
	tok := createDevice(t, a, "m-1", "thermostat")
	_, err := connect(t, a, "m-1", "wrong")
	require.Error(t, err)
	c, err := connect(t, a, "m-1", tok)
	require.NoError(t, err)
	require.NoError(t, publish(t, c, "devices/m-1/telemetry", `{"temperature":1}`))
	c.Publish("devices/m-1/telemetry", 0, false, `{"temperature":2}`) // over the rate
	url := "http://" + a.HTTPAddr() + "/metrics"
	testenv.Eventually(t, 5*time.Second, "limit hit counted", func() bool {
		m, err := testenv.Metrics(url)
		require.NoError(t, err)
		return m[`telehub_mqtt_limit_hits_total{limit="message_rate"}`] == 1
	})
	m, err := testenv.Metrics(url)
	require.NoError(t, err)
	require.Equal(t, 1.0, m[`telehub_mqtt_connections{kind="device"}`])
	require.Equal(t, 0.0, m[`telehub_mqtt_connections{kind="integration"}`])
	require.Equal(t, 1.0, m["telehub_mqtt_connects_total"])
	require.GreaterOrEqual(t, m["telehub_mqtt_auth_failures_total"], 1.0, "paho tries 3.1.1, then 3.1")
	for _, l := range []string{"connect_rate", "max_connections", "packet_size", "topic_levels", "topic_bytes"} {
		require.Contains(t, m, `telehub_mqtt_limit_hits_total{limit="`+l+`"}`)
	}
}

// TestMosquittoInterop: Debian's mosquitto_pub and mosquitto_sub, MQTT
// 3.1.1 and 5, over TCP and TLS, and with a client certificate instead of a
// token. The device publishes with mosquitto_pub; an integration listens
// with mosquitto_sub; the readings are stored.
func TestMosquittoInterop(t *testing.T) {
	pubBin := testenv.Tool(t, "mosquitto_pub")
	subBin := testenv.Tool(t, "mosquitto_sub")
	pki := testenv.NewPKI(t)
	a := transportHub(t, pki, false)
	tok := createDevice(t, a, "mosq", "thermostat")
	status, out := apiRequest(t, a, "POST", "/api/v1/integrations", "", `{"id":"listener","subscribe":["devices/+/telemetry"]}`)
	require.Equal(t, http.StatusCreated, status)
	secret := out["secret"].(string)
	base := time.Now().Add(-time.Hour).UnixMilli()

	n := 0
	for _, transport := range []string{"tcp", "tls"} {
		for _, version := range []string{"mqttv311", "5"} {
			t.Run(transport+" "+version, func(t *testing.T) {
				addr := a.MQTTAddr()
				var tlsArgs []string
				if transport == "tls" {
					addr = a.broker.TLSAddr()
					tlsArgs = []string{"--cafile", pki.CAFile}
				}
				host, port, _ := strings.Cut(addr, ":")
				common := append([]string{"-h", host, "-p", port, "-V", version, "-q", "1"}, tlsArgs...)
				subID := "listener-" + transport + "-" + version
				sub := exec.Command(subBin, append(common, "-i", subID, "-u", "listener", "-P", secret,
					"-t", "devices/+/telemetry", "-C", "1", "-W", "10", "-v")...)
				var subOut strings.Builder
				sub.Stdout, sub.Stderr = &subOut, &subOut
				require.NoError(t, sub.Start())
				testenv.Eventually(t, 10*time.Second, "mosquitto_sub subscribed", func() bool {
					cl, ok := a.broker.Server().Clients.Get(subID)
					return ok && cl.State.Subscriptions.Len() > 0
				})
				payload := fmt.Sprintf(`{"ts":%d,"temperature":%d}`, base+int64(n), n)
				n++
				pub := exec.Command(pubBin, append(common, "-i", "mosq-"+transport+"-"+version, "-u", "mosq", "-P", tok,
					"-t", "devices/mosq/telemetry", "-m", payload)...)
				b, err := pub.CombinedOutput()
				require.NoError(t, err, "%s", b)
				require.NoError(t, sub.Wait(), "%s", subOut.String())
				require.Equal(t, "devices/mosq/telemetry "+payload+"\n", subOut.String())

				// A wrong token and a foreign topic are refused.
				bad := exec.Command(pubBin, append(common, "-u", "mosq", "-P", "wrong", "-t", "devices/mosq/telemetry", "-m", "{}")...)
				b, err = bad.CombinedOutput()
				require.Error(t, err, "%s", b)
				if version == "5" {
					foreign := exec.Command(pubBin, append(common, "-u", "mosq", "-P", tok, "-t", "devices/other/telemetry", "-m", "{}")...)
					b, _ = foreign.CombinedOutput()
					require.Contains(t, string(b), "not authorized")
				}
			})
		}
	}
	testenv.Eventually(t, 10*time.Second, "all readings stored", func() bool { return len(storedValues(t, a, "mosq")) == 4 })
	require.Equal(t, []float64{0, 1, 2, 3}, storedValues(t, a, "mosq"))

	// Mutual TLS: the certificate names the device, no token.
	b2 := transportHub(t, pki, true)
	createDevice(t, b2, "mosq-cert", "thermostat")
	cert, key := pki.Client(t, "mosq-cert")
	host, port, _ := strings.Cut(b2.broker.TLSAddr(), ":")
	for _, version := range []string{"mqttv311", "5"} {
		pub := exec.Command(pubBin, "-h", host, "-p", port, "-V", version, "-q", "1", "--cafile", pki.CAFile,
			"--cert", cert, "--key", key, "-t", "devices/mosq-cert/telemetry", "-m", `{"temperature":7}`)
		out, err := pub.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	noCert := exec.Command(pubBin, "-h", host, "-p", port, "--cafile", pki.CAFile, "-u", "mosq-cert", "-P", "x",
		"-t", "devices/mosq-cert/telemetry", "-m", `{}`)
	out2, err := noCert.CombinedOutput()
	require.Error(t, err, "no client certificate: %s", out2)
	testenv.Eventually(t, 10*time.Second, "certificate readings stored", func() bool { return len(storedValues(t, b2, "mosq-cert")) >= 1 })
}

// TestMQTTJSInterop runs web/test/mqtt-interop.js: MQTT.js, MQTT 3.1.1 and
// 5, over TCP, TLS, WebSocket and secure WebSocket, with topic aliases both
// ways under MQTT 5.
func TestMQTTJSInterop(t *testing.T) {
	node := testenv.Tool(t, "node")
	root := hubRoot(t)
	if _, err := os.Stat(filepath.Join(root, "web", "node_modules", "mqtt", "package.json")); err != nil {
		testenv.Missing(t, "MQTT.js (npm ci --prefix web)")
	}
	pki := testenv.NewPKI(t)
	a := transportHub(t, pki, false)
	tok := createDevice(t, a, "js-1", "thermostat")
	transports := []map[string]string{
		{"name": "tcp", "url": "mqtt://" + a.MQTTAddr()},
		{"name": "tls", "url": "mqtts://" + a.broker.TLSAddr()},
		{"name": "ws", "url": "ws://" + a.broker.WSAddr() + "/mqtt"},
		{"name": "wss", "url": "wss://" + a.broker.WSSAddr() + "/mqtt"},
	}
	base := time.Now().Add(-time.Hour).UnixMilli()
	in, err := json.Marshal(map[string]any{"device": map[string]string{"id": "js-1", "token": tok}, "ca": pki.CAFile,
		"tsBase": base, "transports": transports})
	require.NoError(t, err)

	cmd := exec.Command(node, filepath.Join("web", "test", "mqtt-interop.js"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TELEHUB_INTEROP="+string(in))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	require.NoError(t, err, "node: %s", stderr.String())
	var res struct {
		MQTTJS  string `json:"mqttjs"`
		Results []struct {
			Transport string `json:"transport"`
			Version   int    `json:"version"`
			Granted   []int  `json:"granted"`
			Foreign   []int  `json:"foreign"`
			Received  []struct {
				Topic   string `json:"topic"`
				Payload string `json:"payload"`
				Alias   int    `json:"alias"`
			} `json:"received"`
			Refused *int `json:"refused"`
		} `json:"results"`
	}
	require.NoError(t, json.Unmarshal(stdout, &res), "stdout %q, stderr %s", stdout, stderr.String())
	require.Len(t, res.Results, 8)
	for _, r := range res.Results {
		name := fmt.Sprintf("%s MQTT %d", r.Transport, r.Version)
		require.Equal(t, []int{1}, r.Granted, name)
		require.Len(t, r.Foreign, 1, name)
		require.GreaterOrEqual(t, r.Foreign[0], 128, "%s: another device's telemetry is refused", name)
		require.Len(t, r.Received, 3, name)
		for i, m := range r.Received {
			require.Equal(t, "devices/js-1/echo/ping", m.Topic, "%s: the topic is right, aliased or not", name)
			require.Equal(t, fmt.Sprintf("ping-%d", i), m.Payload, name)
		}
		if r.Version == 5 {
			require.Positive(t, r.Received[2].Alias, "%s: the broker aliases a topic it sent before", name)
			require.NotNil(t, r.Refused, name)
			require.Equal(t, 135, *r.Refused, "%s: not authorized", name)
		}
	}
	testenv.Eventually(t, 10*time.Second, "24 readings stored", func() bool { return len(storedIs(t, a, "js-1")) == 24 })
}

func storedIs(t *testing.T, a *App, id string) []float64 {
	s, err := a.Store().Query(id, "i", time.Now().Add(-48*time.Hour), time.Now().Add(48*time.Hour))
	require.NoError(t, err)
	var out []float64
	for _, v := range s {
		out = append(out, v.Value.Num)
	}
	return out
}

// hubRoot finds the module root from the test's directory.
func hubRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "go.mod not found")
		dir = parent
	}
}
