package firmwaresim

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// cmdObserver is an MQTT client that publishes commands as the hub would and
// collects what the devices answer.
type cmdObserver struct {
	c       paho.Client
	mu      sync.Mutex
	results map[string]map[string]any // command ID -> answer
	states  map[string]map[string]any // device ID -> last reported state
	counts  map[string]int            // device ID -> readings
}

func newCmdObserver(t *testing.T, addr string) *cmdObserver {
	t.Helper()
	o := &cmdObserver{results: map[string]map[string]any{}, states: map[string]map[string]any{}, counts: map[string]int{}}
	o.c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("observer").SetUsername("observer"))
	require.True(t, o.c.Connect().WaitTimeout(5*time.Second))
	t.Cleanup(func() { o.c.Disconnect(100) })
	tok := o.c.SubscribeMultiple(map[string]byte{"devices/+/commands/+/result": 1, "devices/+/state": 1, "devices/+/telemetry": 0},
		func(_ paho.Client, m paho.Message) {
			parts := strings.Split(m.Topic(), "/")
			o.mu.Lock()
			defer o.mu.Unlock()
			switch {
			case parts[2] == "telemetry":
				o.counts[parts[1]]++
				return
			case parts[2] == "state":
				var st map[string]any
				if json.Unmarshal(m.Payload(), &st) == nil {
					o.states[parts[1]] = st
				}
			default:
				var r map[string]any
				if json.Unmarshal(m.Payload(), &r) == nil {
					o.results[parts[3]] = r
				}
			}
		})
	require.True(t, tok.WaitTimeout(5*time.Second))
	return o
}

func (o *cmdObserver) command(t *testing.T, dev, id, payload string) map[string]any {
	t.Helper()
	require.True(t, o.c.Publish("devices/"+dev+"/commands/"+id, 1, false, payload).WaitTimeout(5*time.Second))
	var r map[string]any
	eventually(t, 5*time.Second, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		r = o.results[id]
		delete(o.results, id)
		return r != nil
	}, "answer to %s", id)
	return r
}

func (o *cmdObserver) state(dev string) map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.states[dev]
}

func (o *cmdObserver) readings(dev string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[dev]
}

func TestSimulatedDevicesObeyCommandsAndDesiredState(t *testing.T) {
	hub := newFakeHub(t)
	b := startBroker(t, "127.0.0.1:0", hub)
	obs := newCmdObserver(t, b.addr)
	cfg := DefaultConfig()
	cfg.HubURL, cfg.MQTTURL, cfg.Token = hub.srv.URL, "tcp://"+b.addr, adminToken
	cfg.Thermostats, cfg.Wearables, cfg.IDPrefix = 1, 1, "u"
	cfg.Interval = time.Hour // no readings until set_interval
	f, err := New(cfg, testLogger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(t, f.Run(ctx)) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	const thermo, wear = "u-thermo-0001", "u-wearable-0001"
	eventually(t, 10*time.Second, func() bool { return obs.state(thermo) != nil && obs.state(wear) != nil }, "state reported on connect")
	require.Equal(t, 3_600_000.0, obs.state(wear)["interval_ms"])

	expired := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	for _, tc := range []struct {
		name, dev, id, payload string
		ok                     bool
		want                   string // a result member, or the error's text
	}{
		{"set_setpoint", thermo, "c1", `{"name":"set_setpoint","params":{"value":25}}`, true, "setpoint=25"},
		{"resend answers again without running", thermo, "c1", `{"name":"set_setpoint","params":{"value":26}}`, true, "setpoint=25"},
		{"set_mode", thermo, "c2", `{"name":"set_mode","params":{"mode":"off"}}`, true, "mode=off"},
		{"unknown command", thermo, "c3", `{"name":"reboot"}`, false, `unknown command: "reboot"`},
		{"bad parameter", thermo, "c4", `{"name":"set_setpoint","params":{"value":99}}`, false, "invalid command parameters"},
		{"missing parameter", thermo, "c5", `{"name":"set_mode","params":{}}`, false, `missing "mode"`},
		{"not JSON", thermo, "c6", `set it`, false, "not JSON"},
		{"expired", thermo, "c7", `{"name":"set_mode","params":{"mode":"heat"},"expires_at":"` + expired + `"}`, false, "expired"},
		{"thermostats have no set_interval", thermo, "c8", `{"name":"set_interval","params":{"interval_ms":500}}`, false, "unknown command"},
		{"vibrate", wear, "w1", `{"name":"vibrate","params":{"duration_ms":100}}`, true, "vibrations=1"},
		{"interval too short", wear, "w2", `{"name":"set_interval","params":{"interval_ms":50}}`, false, "invalid command parameters"},
		{"set_interval", wear, "w3", `{"name":"set_interval","params":{"interval_ms":100}}`, true, "interval_ms=100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := obs.command(t, tc.dev, tc.id, tc.payload)
			if !tc.ok {
				require.Equal(t, "error", r["status"], "%v", r)
				require.Contains(t, r["error"], tc.want)
				return
			}
			require.Equal(t, "ok", r["status"], "%v", r)
			k, v, _ := strings.Cut(tc.want, "=")
			require.Equal(t, v, strings.TrimSuffix(strings.TrimSuffix(jsonString(r["result"].(map[string]any)[k]), ".0"), `"`))
		})
	}
	require.Equal(t, map[string]any{"setpoint": 25.0, "mode": "off"}, obs.state(thermo))
	eventually(t, 10*time.Second, func() bool { return obs.readings(wear) >= 3 }, "the wearable publishes at its new rate")
	eventually(t, 5*time.Second, func() bool { return obs.state(wear)["interval_ms"] == 100.0 }, "new interval reported")

	// Desired state, retained, is applied and reported back.
	require.True(t, obs.c.Publish("devices/"+thermo+"/state/desired", 1, true, `{"version":3,"state":{"setpoint":18,"mode":"heat","colour":"red"}}`).WaitTimeout(5*time.Second))
	eventually(t, 5*time.Second, func() bool { return obs.state(thermo)["setpoint"] == 18.0 }, "desired setpoint applied")
	require.Equal(t, map[string]any{"setpoint": 18.0, "mode": "heat"}, obs.state(thermo), "unknown members are not reported")
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func TestCommandSchemasMatchTheModels(t *testing.T) {
	schemas := CommandSchemas()
	require.ElementsMatch(t, []string{"set_setpoint", "set_mode"}, keys(schemas[TypeThermostat].Commands))
	require.ElementsMatch(t, []string{"vibrate", "set_interval"}, keys(schemas[TypeWearable].Commands))
	sp := schemas[TypeThermostat].Commands["set_setpoint"].Params["value"]
	require.Equal(t, MinSetpoint, *sp.Minimum)
	require.Equal(t, MaxSetpoint, *sp.Maximum)
	_, err := json.Marshal(schemas)
	require.NoError(t, err)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
