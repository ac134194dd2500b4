package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/cli"
	firmwaresim "github.com/telehub/telehub/firmware-sim"
	"github.com/telehub/telehub/internal/testenv"
)

// apiCommand is a command as the API returns it.
type apiCommand struct {
	ID        string         `json:"id"`
	DeviceID  string         `json:"device_id"`
	Name      string         `json:"name"`
	Status    string         `json:"status"`
	Revision  uint64         `json:"revision"`
	CreatedBy string         `json:"created_by"`
	Attempts  int            `json:"attempts"`
	SentAt    *time.Time     `json:"sent_at"`
	Result    map[string]any `json:"result"`
	Error     string         `json:"error"`
	ResultVia string         `json:"result_via"`
	History   []struct {
		Status string `json:"status"`
	} `json:"history"`
}

func (c apiCommand) statuses() []string {
	var out []string
	for _, h := range c.History {
		out = append(out, h.Status)
	}
	return out
}

// ctlCall calls the API with token and returns the status, headers and body.
func ctlCall(t *testing.T, a *App, token, method, path, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b.Bytes()
}

// sendCmd submits a command as admin and expects 202.
func sendCmd(t *testing.T, a *App, dev, body string) apiCommand {
	t.Helper()
	status, _, b := ctlCall(t, a, a.AdminToken, "POST", "/api/v1/devices/"+dev+"/commands", body)
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	var c apiCommand
	require.NoError(t, json.Unmarshal(b, &c))
	return c
}

func getCmd(t *testing.T, a *App, dev, id string) apiCommand {
	t.Helper()
	status, _, b := ctlCall(t, a, a.AdminToken, "GET", "/api/v1/devices/"+dev+"/commands/"+id, "")
	require.Equal(t, http.StatusOK, status, "%s", b)
	var c apiCommand
	require.NoError(t, json.Unmarshal(b, &c))
	return c
}

// waitCmd long-polls a command until it has the status.
func waitCmd(t *testing.T, a *App, dev, id, status string) apiCommand {
	t.Helper()
	var c apiCommand
	testenv.Eventually(t, 15*time.Second, "command "+id+" "+status, func() bool {
		code, _, b := ctlCall(t, a, a.AdminToken, "GET", fmt.Sprintf("/api/v1/devices/%s/commands/%s?wait=2s&after=%d", dev, id, c.Revision), "")
		require.Equal(t, http.StatusOK, code, "%s", b)
		require.NoError(t, json.Unmarshal(b, &c))
		return c.Status == status
	})
	return c
}

// startSimFleet runs simulated devices until the test ends and waits until
// they are connected.
func startSimFleet(t *testing.T, a *App, prefix string, thermostats, wearables int, tune func(*firmwaresim.Config)) {
	t.Helper()
	cfg := firmwaresim.DefaultConfig()
	cfg.HubURL, cfg.MQTTURL, cfg.Token = "http://"+a.HTTPAddr(), "tcp://"+a.MQTTAddr(), a.AdminToken
	cfg.Thermostats, cfg.Wearables, cfg.IDPrefix = thermostats, wearables, prefix
	cfg.Interval, cfg.DrainTimeout = 100*time.Millisecond, time.Second
	if tune != nil {
		tune(&cfg)
	}
	f, err := firmwaresim.New(cfg, testenv.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = f.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	testenv.Eventually(t, 15*time.Second, "fleet connected", func() bool { return f.Stats().Connected == thermostats+wearables })
}

// liveEvents collects command and state messages of the live stream.
type liveEvents struct {
	mu   sync.Mutex
	msgs []map[string]any
}

func collectLive(t *testing.T, a *App) *liveEvents {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+a.HTTPAddr()+"/api/v1/live?token="+a.AdminToken, nil)
	require.NoError(t, err)
	resp.Body.Close()
	l := &liveEvents{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil && (m["kind"] == "command" || m["kind"] == "state") {
				l.mu.Lock()
				l.msgs = append(l.msgs, m)
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return l
}

// commandStatuses returns the statuses the stream reported for a command.
func (l *liveEvents) commandStatuses(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.msgs {
		if c, ok := m["command"].(map[string]any); ok && c["id"] == id {
			out = append(out, c["status"].(string))
		}
	}
	return out
}

// reported returns the latest reported state the stream carried for a device.
func (l *liveEvents) reported(dev string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.msgs) - 1; i >= 0; i-- {
		if s, ok := l.msgs[i]["state"].(map[string]any); ok && l.msgs[i]["device_id"] == dev {
			r, _ := s["reported"].(map[string]any)
			return r
		}
	}
	return nil
}

func latestOf(t *testing.T, a *App, dev string) map[string]any {
	t.Helper()
	var d struct {
		Latest map[string]any `json:"latest"`
	}
	apiGet(t, a, "/api/v1/devices/"+dev, &d)
	return d.Latest
}

// An operator drives a simulated thermostat: the command goes queued, sent,
// delivered, succeeded (on the API and the live stream), and the room's
// readings move to the new setpoint.
func TestCommandToOnlineThermostatSucceedsAndRoomFollows(t *testing.T) {
	a := startHub(t, nil)
	ev := collectLive(t, a)
	startSimFleet(t, a, "on", 1, 0, func(c *firmwaresim.Config) { c.TimeScale = 600 })
	const dev = "on-thermo-0001"
	testenv.Eventually(t, 10*time.Second, "readings", func() bool { return latestOf(t, a, dev)["temperature"] != nil })
	require.Less(t, latestOf(t, a, dev)["setpoint"].(float64), 25.0)

	c := sendCmd(t, a, dev, `{"name":"set_setpoint","params":{"value":28},"timeout":"30s"}`)
	require.Contains(t, []string{"queued", "sent"}, c.Status)
	require.Len(t, c.ID, 26)
	c = waitCmd(t, a, dev, c.ID, "succeeded")
	require.Equal(t, []string{"queued", "sent", "delivered", "succeeded"}, c.statuses())
	require.Equal(t, 28.0, c.Result["setpoint"])
	require.Equal(t, 1, c.Attempts)
	require.Equal(t, "result_topic", c.ResultVia)
	require.Contains(t, c.CreatedBy, "admin")
	testenv.Eventually(t, 5*time.Second, "live stream statuses", func() bool {
		return slices.Equal(ev.commandStatuses(c.ID), []string{"queued", "sent", "delivered", "succeeded"})
	})

	// The room warms towards 28 °C: far above the 19-22 °C it held.
	testenv.Eventually(t, 15*time.Second, "temperature near the new setpoint", func() bool {
		l := latestOf(t, a, dev)
		return l["setpoint"] == 28.0 && l["temperature"].(float64) > 26.5
	})
	// The device reported its new state.
	testenv.Eventually(t, 5*time.Second, "reported state", func() bool { return ev.reported(dev)["setpoint"] == 28.0 })

	// The list shows it, filtered by status.
	var list struct {
		Commands []apiCommand `json:"commands"`
	}
	apiGet(t, a, "/api/v1/devices/"+dev+"/commands?status=succeeded,failed", &list)
	require.Len(t, list.Commands, 1)
	apiGet(t, a, "/api/v1/devices/"+dev+"/commands?status=queued", &list)
	require.Empty(t, list.Commands)
}

// A command for an offline device is kept queued and delivered when it
// connects; one whose expiry passes first expires and is never sent.
func TestCommandQueuedForOfflineDeviceThenDeliveredAndAnotherExpires(t *testing.T) {
	a := startHub(t, nil)
	const dev = "off-thermo-0001"
	createDevice(t, a, dev, "thermostat")
	keep := sendCmd(t, a, dev, `{"name":"set_setpoint","params":{"value":27},"timeout":"1m"}`)
	lapse := sendCmd(t, a, dev, `{"name":"set_mode","params":{"mode":"off"},"timeout":"300ms"}`)
	require.Equal(t, "queued", keep.Status)
	require.Equal(t, "queued", lapse.Status)

	lapsed := waitCmd(t, a, dev, lapse.ID, "expired")
	require.Equal(t, []string{"queued", "expired"}, lapsed.statuses())
	require.Zero(t, lapsed.Attempts)
	require.Equal(t, "queued", getCmd(t, a, dev, keep.ID).Status)

	startSimFleet(t, a, "off", 1, 0, nil)
	kept := waitCmd(t, a, dev, keep.ID, "succeeded")
	require.Equal(t, []string{"queued", "sent", "delivered", "succeeded"}, kept.statuses())
	testenv.Eventually(t, 5*time.Second, "setpoint applied", func() bool { return latestOf(t, a, dev)["setpoint"] == 27.0 })
	require.Equal(t, "heat", latestOf(t, a, dev)["mode"], "the expired set_mode never reached the device")
	lapsed = getCmd(t, a, dev, lapse.ID)
	require.Equal(t, "expired", lapsed.Status)
	require.Zero(t, lapsed.Attempts)
	require.Nil(t, lapsed.SentAt)
}

// rawDevice is an MQTT 3.1.1 device that records the commands it receives
// and answers only when told to.
type rawDevice struct {
	c    paho.Client
	mu   sync.Mutex
	got  []string
	desi []string
}

func connectRawDevice(t *testing.T, a *App, id, token string, into *rawDevice) paho.Client {
	t.Helper()
	c, err := connect(t, a, id, token)
	require.NoError(t, err)
	tok := c.SubscribeMultiple(map[string]byte{"devices/" + id + "/commands/+": 1, "devices/" + id + "/state/desired": 1},
		func(_ paho.Client, m paho.Message) {
			into.mu.Lock()
			defer into.mu.Unlock()
			if strings.HasSuffix(m.Topic(), "/state/desired") {
				into.desi = append(into.desi, string(m.Payload()))
				return
			}
			into.got = append(into.got, m.Topic()[strings.LastIndex(m.Topic(), "/")+1:])
		})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	into.c = c
	return c
}

func (d *rawDevice) received() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got)
}

func (d *rawDevice) desired() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.desi)
}

func (d *rawDevice) answer(t *testing.T, dev, id, payload string) {
	t.Helper()
	require.NoError(t, publish(t, d.c, "devices/"+dev+"/commands/"+id+"/result", payload))
}

// A restart with commands in flight loses none and sends none twice:
// delivered ones stay delivered and are not resent, queued ones are sent
// once when their device connects, idempotency keys and desired state
// survive.
func TestCommandsSurviveRestartNoneLostNoneSentTwice(t *testing.T) {
	dir := t.TempDir()
	a := startHubIn(t, dir, nil)
	tokA := createDevice(t, a, "rs-a", "gadget")
	tokB := createDevice(t, a, "rs-b", "gadget")
	var devA, devB rawDevice
	connectRawDevice(t, a, "rs-a", tokA, &devA)

	c1 := sendCmd(t, a, "rs-a", `{"name":"one","idempotency_key":"k1"}`)
	c2 := sendCmd(t, a, "rs-a", `{"name":"two","params":{"x":[1,2]}}`)
	waitCmd(t, a, "rs-a", c1.ID, "delivered")
	waitCmd(t, a, "rs-a", c2.ID, "delivered")
	c3 := sendCmd(t, a, "rs-b", `{"name":"three"}`)
	c4 := sendCmd(t, a, "rs-b", `{"name":"four"}`)
	status, _, b := ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/devices/rs-a/state", `{"setpoint":21}`)
	require.Equal(t, http.StatusOK, status, "%s", b)
	devA.c.Disconnect(100)
	a.Stop()

	a = startHubIn(t, dir, nil)
	require.Equal(t, "delivered", getCmd(t, a, "rs-a", c1.ID).Status)
	require.Equal(t, "delivered", getCmd(t, a, "rs-a", c2.ID).Status)
	require.Equal(t, "queued", getCmd(t, a, "rs-b", c3.ID).Status)
	require.Equal(t, "queued", getCmd(t, a, "rs-b", c4.ID).Status)
	status, hdr, b := ctlCall(t, a, a.AdminToken, "POST", "/api/v1/devices/rs-a/commands", `{"name":"one","idempotency_key":"k1"}`)
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "true", hdr.Get("Idempotent-Replayed"))
	require.Contains(t, string(b), c1.ID, "the idempotency key survived the restart")

	connectRawDevice(t, a, "rs-a", tokA, &devA)
	testenv.Eventually(t, 5*time.Second, "retained desired state", func() bool { return len(devA.desired()) > 0 })
	require.JSONEq(t, `{"setpoint":21}`, string(mustField(t, devA.desired()[0], "state")))
	devA.answer(t, "rs-a", c1.ID, `{"status":"ok","result":{"done":1}}`)
	devA.answer(t, "rs-a", c2.ID, `{"status":"error","error":"nope"}`)
	require.Equal(t, map[string]any{"done": 1.0}, waitCmd(t, a, "rs-a", c1.ID, "succeeded").Result)
	require.Equal(t, "nope", waitCmd(t, a, "rs-a", c2.ID, "failed").Error)

	connectRawDevice(t, a, "rs-b", tokB, &devB)
	testenv.Eventually(t, 5*time.Second, "queued commands sent on connect", func() bool { return len(devB.received()) >= 2 })
	devB.answer(t, "rs-b", c3.ID, `{"status":"ok"}`)
	devB.answer(t, "rs-b", c4.ID, `{"status":"ok"}`)
	waitCmd(t, a, "rs-b", c3.ID, "succeeded")
	waitCmd(t, a, "rs-b", c4.ID, "succeeded")

	// A marker: anything resent to rs-a would have arrived before it.
	c5 := sendCmd(t, a, "rs-a", `{"name":"five"}`)
	testenv.Eventually(t, 5*time.Second, "marker received", func() bool { return slices.Contains(devA.received(), c5.ID) })
	require.Equal(t, []string{c1.ID, c2.ID, c5.ID}, devA.received(), "nothing was sent twice to rs-a")
	require.ElementsMatch(t, []string{c3.ID, c4.ID}, devB.received(), "rs-b got its queued commands once")
	for _, c := range []apiCommand{c1, c2} {
		require.Equal(t, 1, getCmd(t, a, "rs-a", c.ID).Attempts)
	}
	for _, c := range []apiCommand{c3, c4} {
		require.Equal(t, 1, getCmd(t, a, "rs-b", c.ID).Attempts)
	}
}

func mustField(t *testing.T, doc, field string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(doc), &m))
	return m[field]
}

// MQTT 5 request/response with clients we did not write: mosquitto_sub
// receives the command with its response topic, correlation data and
// message expiry; mosquitto_pub answers on the response topic with the
// correlation data, which completes the command.
func TestCommandMQTT5RequestResponseWithMosquitto(t *testing.T) {
	sub := testenv.Tool(t, "mosquitto_sub")
	pub := testenv.Tool(t, "mosquitto_pub")
	a := startHub(t, nil)
	tok := createDevice(t, a, "rr-1", "gadget")
	c := sendCmd(t, a, "rr-1", `{"name":"ping","params":{"n":1},"timeout":"2m"}`)
	require.Equal(t, "queued", c.Status)

	host, port, _ := strings.Cut(a.MQTTAddr(), ":")
	conn := []string{"-V", "5", "-h", host, "-p", port, "-i", "rr-1", "-u", "rr-1", "-P", tok, "-q", "1"}
	out, err := exec.Command(sub, append(conn, "-t", "devices/rr-1/commands/+", "-C", "1", "-W", "10",
		"-F", "%t|%R|%D|%E|%p")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	parts := strings.SplitN(strings.TrimSpace(string(out)), "|", 5)
	require.Len(t, parts, 5, "%s", out)
	require.Equal(t, "devices/rr-1/commands/"+c.ID, parts[0])
	require.Equal(t, "devices/rr-1/responses", parts[1], "response topic")
	require.Equal(t, c.ID, parts[2], "correlation data")
	require.Regexp(t, `^(1[01][0-9]|120|[1-9][0-9]?)$`, parts[3], "message expiry from the command's 2m")
	require.JSONEq(t, `{"n":1}`, string(mustField(t, parts[4], "params")))
	waitCmd(t, a, "rr-1", c.ID, "delivered")

	out, err = exec.Command(pub, append(conn, "-t", parts[1], "-D", "publish", "correlation-data", parts[2],
		"-m", `{"pong":true}`)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	done := waitCmd(t, a, "rr-1", c.ID, "succeeded")
	require.Equal(t, "response_topic", done.ResultVia)
	require.Equal(t, map[string]any{"pong": true}, done.Result)
	require.Equal(t, []string{"queued", "sent", "delivered", "succeeded"}, done.statuses())
}

// Viewers cannot send, operators can and are recorded; the idempotency key
// is honoured; invalid commands are refused with a clear 400 and not sent.
func TestCommandRolesIdempotencyAndValidation(t *testing.T) {
	a := startHub(t, nil)
	createDevice(t, a, "val-t", "thermostat")
	schema, err := json.Marshal(firmwaresim.CommandSchemas()[firmwaresim.TypeThermostat])
	require.NoError(t, err)
	status, _, b := ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/device-types/thermostat/commands", string(schema))
	require.Equal(t, http.StatusOK, status, "%s", b)

	secrets := map[string]string{}
	for _, role := range []string{"viewer", "operator"} {
		var out struct {
			Secret string `json:"secret"`
		}
		require.Equal(t, http.StatusCreated, apiCall(t, a, "POST", "/api/v1/tokens", `{"name":"`+role+` bob","role":"`+role+`"}`, &out))
		secrets[role] = out.Secret
	}
	const path = "/api/v1/devices/val-t/commands"
	good := `{"name":"set_setpoint","params":{"value":21}}`

	status, _, _ = ctlCall(t, a, secrets["viewer"], "POST", path, good)
	require.Equal(t, http.StatusForbidden, status, "a viewer cannot send")
	status, _, b = ctlCall(t, a, secrets["operator"], "POST", path, good)
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	var first apiCommand
	require.NoError(t, json.Unmarshal(b, &first))
	require.Contains(t, first.CreatedBy, "operator bob")

	// Idempotency: the same key gives the same command, a different
	// command under it is refused.
	status, hdr, b := ctlCall(t, a, secrets["operator"], "POST", path, `{"name":"set_mode","params":{"mode":"off"}}`, "Idempotency-Key", "abc")
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	require.Empty(t, hdr.Get("Idempotent-Replayed"))
	var keyed apiCommand
	require.NoError(t, json.Unmarshal(b, &keyed))
	status, hdr, b = ctlCall(t, a, secrets["operator"], "POST", path, `{"name":"set_mode","params":{"mode":"off"},"idempotency_key":"abc"}`)
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "true", hdr.Get("Idempotent-Replayed"))
	var again apiCommand
	require.NoError(t, json.Unmarshal(b, &again))
	require.Equal(t, keyed.ID, again.ID)

	for _, tc := range []struct {
		name, body, key string
		status          int
		detail          string
	}{
		{"key reused for another command", `{"name":"set_mode","params":{"mode":"heat"}}`, "abc", 422, "different command"},
		{"header and body keys differ", `{"name":"set_mode","params":{"mode":"heat"},"idempotency_key":"x"}`, "y", 400, "differ"},
		{"above maximum", `{"name":"set_setpoint","params":{"value":99}}`, "", 400, `parameter "value": 99 is above the maximum 30`},
		{"missing parameter", `{"name":"set_setpoint","params":{}}`, "", 400, `missing required parameter "value"`},
		{"wrong type", `{"name":"set_setpoint","params":{"value":"hot"}}`, "", 400, "want a number, got a string"},
		{"unknown parameter", `{"name":"set_setpoint","params":{"value":20,"fan":1}}`, "", 400, `unknown parameter "fan"`},
		{"not in enum", `{"name":"set_mode","params":{"mode":"cool"}}`, "", 400, `must be one of ["heat","off"]`},
		{"unknown command", `{"name":"reboot"}`, "", 400, `unknown command "reboot"; this device type accepts set_mode, set_setpoint`},
		{"params not an object", `{"name":"set_mode","params":[1]}`, "", 400, "must be a JSON object"},
		{"bad name", `{"name":"a/b"}`, "", 400, "name"},
		{"negative timeout", `{"name":"set_mode","params":{"mode":"off"},"timeout":"-1s"}`, "", 400, "timeout"},
		{"timeout too long", `{"name":"set_mode","params":{"mode":"off"},"timeout":"9999h"}`, "", 400, "at most"},
		{"unknown field", `{"name":"set_mode","colour":"red"}`, "", 400, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.key != "" {
				h = []string{"Idempotency-Key", tc.key}
			}
			status, hdr, b := ctlCall(t, a, secrets["operator"], "POST", path, tc.body, h...)
			require.Equal(t, tc.status, status, "%s", b)
			require.Equal(t, "application/problem+json", hdr.Get("Content-Type"))
			var p struct {
				Detail string `json:"detail"`
			}
			require.NoError(t, json.Unmarshal(b, &p))
			require.Contains(t, p.Detail, tc.detail)
		})
	}
	status, _, _ = ctlCall(t, a, secrets["operator"], "POST", "/api/v1/devices/ghost/commands", good)
	require.Equal(t, http.StatusNotFound, status)

	var list struct {
		Commands []apiCommand `json:"commands"`
	}
	apiGet(t, a, path, &list)
	require.Len(t, list.Commands, 2, "refused commands were not stored")
	require.Equal(t, []string{keyed.ID, first.ID}, []string{list.Commands[0].ID, list.Commands[1].ID}, "newest first")

	// Roles on state and schemas.
	for _, tc := range []struct {
		token, method, path, body string
		status                    int
	}{
		{secrets["viewer"], "GET", path + "/" + first.ID, "", 200},
		{secrets["viewer"], "GET", "/api/v1/devices/val-t/state", "", 200},
		{secrets["viewer"], "PUT", "/api/v1/devices/val-t/state", `{"mode":"off"}`, 403},
		{secrets["operator"], "PUT", "/api/v1/devices/val-t/state", `{"mode":"off"}`, 200},
		{secrets["operator"], "PUT", "/api/v1/devices/val-t/state", `[1]`, 400},
		{secrets["viewer"], "GET", "/api/v1/device-types/thermostat/commands", "", 200},
		{secrets["operator"], "PUT", "/api/v1/device-types/thermostat/commands", string(schema), 403},
		{a.AdminToken, "PUT", "/api/v1/device-types/thermostat/commands", `{"commands":{"x":{"params":{"p":{"type":"float"}}}}}`, 400},
		{a.AdminToken, "GET", "/api/v1/device-types/none/commands", "", 404},
	} {
		status, _, b := ctlCall(t, a, tc.token, tc.method, tc.path, tc.body)
		require.Equal(t, tc.status, status, "%s %s: %s", tc.method, tc.path, b)
	}
}

// A device type's commands declared with a full JSON Schema (params_schema)
// through the API: the schema is stored and given back, a command that does
// not match gets a 400 problem naming the parameter, and a schema that
// refers outside itself is refused.
func TestCommandParamsSchemaOverAPI(t *testing.T) {
	a := startHub(t, nil)
	createDevice(t, a, "ps-1", "valve")
	schema := `{"commands":{"open":{"description":"Open the valve.","params_schema":{
		"type":"object","required":["percent"],"additionalProperties":false,
		"properties":{
			"percent":{"type":"integer","minimum":0,"maximum":100},
			"ramp":{"type":"object","properties":{"over":{"type":"string","pattern":"^[0-9]+s$"}}}
		}}}}}`
	status, _, b := ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/device-types/valve/commands", schema)
	require.Equal(t, http.StatusOK, status, "%s", b)
	var got struct {
		Commands map[string]struct {
			ParamsSchema map[string]any `json:"params_schema"`
		} `json:"commands"`
	}
	apiGet(t, a, "/api/v1/device-types/valve/commands", &got)
	require.Equal(t, []any{"percent"}, got.Commands["open"].ParamsSchema["required"])

	const path = "/api/v1/devices/ps-1/commands"
	status, _, b = ctlCall(t, a, a.AdminToken, "POST", path, `{"name":"open","params":{"percent":40,"ramp":{"over":"30s"}}}`)
	require.Equal(t, http.StatusAccepted, status, "%s", b)
	for _, tc := range []struct {
		name, method, path, body, detail string
	}{
		{"nested pattern", "POST", path, `{"name":"open","params":{"percent":40,"ramp":{"over":"soon"}}}`,
			`open: parameter "ramp.over": "soon" does not match the pattern ^[0-9]+s$`},
		{"integer", "POST", path, `{"name":"open","params":{"percent":40.5}}`, `open: parameter "percent": want an integer, got 40.5`},
		{"missing", "POST", path, `{"name":"open","params":{}}`, `open: missing required parameter "percent" (integer)`},
		{"remote reference", "PUT", "/api/v1/device-types/valve/commands", `{"commands":{"open":{"params_schema":{"$ref":"https://example.com/valve.json"}}}}`,
			`command "open": params_schema: refers to https://example.com/valve.json: only references inside the schema (such as #/$defs/name) are allowed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, b := ctlCall(t, a, a.AdminToken, tc.method, tc.path, tc.body)
			require.Equal(t, http.StatusBadRequest, status, "%s", b)
			require.Equal(t, "application/problem+json", hdr.Get("Content-Type"))
			var p struct {
				Detail string `json:"detail"`
			}
			require.NoError(t, json.Unmarshal(b, &p))
			require.Equal(t, tc.detail, p.Detail)
		})
	}
	require.Equal(t, 3.0, metricOf(t, a, `telehub_commands_refused_total{reason="invalid"}`), "the three refused commands are counted")
}

// Desired state reaches a simulated thermostat, which reports it back (in
// sync, on the live stream); conditional updates need the current version.
// Wearables vibrate and change their publish rate; unknown commands and bad
// parameters are answered with a failed result and a reason.
func TestDesiredStateAndSimulatedDevicesObey(t *testing.T) {
	a := startHub(t, nil)
	ev := collectLive(t, a)
	ws := dialLive(t, a)
	startSimFleet(t, a, "ob", 1, 1, func(c *firmwaresim.Config) { c.Interval = time.Hour })
	const thermo, wear = "ob-thermo-0001", "ob-wearable-0001"

	type state struct {
		Desired         map[string]any `json:"desired"`
		DesiredVersion  uint64         `json:"desired_version"`
		Reported        map[string]any `json:"reported"`
		ReportedVersion uint64         `json:"reported_version"`
		Delta           map[string]any `json:"delta"`
		InSync          bool           `json:"in_sync"`
	}
	status, hdr, b := ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/devices/"+thermo+"/state", `{"setpoint":24.5,"mode":"off"}`)
	require.Equal(t, http.StatusOK, status, "%s", b)
	require.Equal(t, `"1"`, hdr.Get("ETag"))
	var st state
	testenv.Eventually(t, 10*time.Second, "thermostat in sync", func() bool {
		st = state{}
		apiGet(t, a, "/api/v1/devices/"+thermo+"/state", &st)
		return st.InSync
	})
	require.Equal(t, map[string]any{"setpoint": 24.5, "mode": "off"}, st.Reported)
	require.Empty(t, st.Delta)
	require.Equal(t, uint64(1), st.DesiredVersion)
	testenv.Eventually(t, 5*time.Second, "state on the live stream", func() bool { return ev.reported(thermo)["mode"] == "off" })
	status, _, _ = ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/devices/"+thermo+"/state", `{"setpoint":20}`, "If-Match", `"0"`)
	require.Equal(t, http.StatusPreconditionFailed, status, "a stale version is refused")
	status, _, b = ctlCall(t, a, a.AdminToken, "PUT", "/api/v1/devices/"+thermo+"/state", `{"setpoint":99}`, "If-Match", `"1"`)
	require.Equal(t, http.StatusOK, status)
	st = state{}
	require.NoError(t, json.Unmarshal(b, &st))
	require.Equal(t, uint64(2), st.DesiredVersion)
	testenv.Eventually(t, 5*time.Second, "out of range desired stays in the delta", func() bool {
		st = state{}
		apiGet(t, a, "/api/v1/devices/"+thermo+"/state", &st)
		return !st.InSync && st.Delta["setpoint"] == 99.0 && st.ReportedVersion >= 2
	})

	// Wearables.
	c := waitCmd(t, a, wear, sendCmd(t, a, wear, `{"name":"vibrate","params":{"duration_ms":200}}`).ID, "succeeded")
	require.Equal(t, 1.0, c.Result["vibrations"])
	before := ws.count(wear)
	waitCmd(t, a, wear, sendCmd(t, a, wear, `{"name":"set_interval","params":{"interval_ms":100}}`).ID, "succeeded")
	testenv.Eventually(t, 10*time.Second, "faster readings", func() bool { return ws.count(wear) >= before+5 })
	testenv.Eventually(t, 5*time.Second, "reported interval", func() bool { return ev.reported(wear)["interval_ms"] == 100.0 })

	// Without the hub's schema, the device itself refuses.
	status, _, _ = ctlCall(t, a, a.AdminToken, "DELETE", "/api/v1/device-types/wearable/commands", "")
	require.Equal(t, http.StatusNoContent, status)
	c = waitCmd(t, a, wear, sendCmd(t, a, wear, `{"name":"reboot"}`).ID, "failed")
	require.Contains(t, c.Error, `unknown command: "reboot"`)
	c = waitCmd(t, a, wear, sendCmd(t, a, wear, `{"name":"vibrate","params":{"duration_ms":99999}}`).ID, "failed")
	require.Contains(t, c.Error, "invalid command parameters")
	status, _, _ = ctlCall(t, a, a.AdminToken, "DELETE", "/api/v1/device-types/thermostat/commands", "")
	require.Equal(t, http.StatusNoContent, status)
	c = waitCmd(t, a, thermo, sendCmd(t, a, thermo, `{"name":"set_interval","params":{"interval_ms":100}}`).ID, "failed")
	require.Contains(t, c.Error, "unknown command", "thermostats do not take set_interval")
}

// `telehub command send ... --wait` prints each status as it changes.
func TestCommandCLISendWait(t *testing.T) {
	a := startHub(t, nil)
	startSimFleet(t, a, "cli", 1, 0, nil)
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := cli.Command(context.Background(), args, cli.Env{Stdout: &out, Stderr: &out, Getenv: func(k string) string {
			return map[string]string{"TELEHUB_URL": "http://" + a.HTTPAddr(), "TELEHUB_TOKEN": a.AdminToken}[k]
		}})
		return out.String(), err
	}
	out, err := run("send", "cli-thermo-0001", "set_setpoint", "value=23.5", "--wait", "--timeout", "30s")
	require.NoError(t, err, out)
	require.Regexp(t, `(?s)queued.*\n.*sent.*\n.*delivered.*\n.*succeeded.*\nresult: \{.*"setpoint":23\.5`, out)

	out, err = run("send", "cli-thermo-0001", "set_mode", "mode=cool", "--wait")
	require.Error(t, err)
	require.Contains(t, err.Error(), "400")
	require.Contains(t, err.Error(), "must be one of")
	require.Empty(t, out, "refused: nothing was created")

	// A command the device refuses: the CLI says so and fails.
	status, _, _ := ctlCall(t, a, a.AdminToken, "DELETE", "/api/v1/device-types/thermostat/commands", "")
	require.Equal(t, http.StatusNoContent, status)
	out, err = run("send", "cli-thermo-0001", "reboot", "--wait")
	require.ErrorIs(t, err, cli.ErrCommandFailed)
	require.Regexp(t, `(?s)queued.*failed\s+unknown command.*\nerror: unknown command: "reboot"`, out)

	out, err = run("list", "cli-thermo-0001")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ID\s+NAME\s+STATUS`, out)
	require.Regexp(t, `set_setpoint\s+succeeded`, out)
}
