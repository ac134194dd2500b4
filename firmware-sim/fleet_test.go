package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// observer subscribes to all telemetry and records, per device, the
// timestamps it received, and any payload that breaks the contract.
type observer struct {
	mu       sync.Mutex
	ts       map[string]map[int64]bool
	problems []string
}

func startObserver(t testing.TB, addr string) *observer {
	t.Helper()
	o := &observer{ts: map[string]map[int64]bool{}}
	const filter = "devices/+/telemetry"
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID("observer").
		SetUsername("observer").
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).
		SetOrderMatters(false).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(filter, 1, o.handle) // resubscribes after a broker restart
		})
	c := paho.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second), "observer connect")
	require.NoError(t, tok.Error())
	tok = c.Subscribe(filter, 1, o.handle)
	require.True(t, tok.WaitTimeout(5*time.Second), "observer subscribe")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return o
}

func (o *observer) handle(_ paho.Client, m paho.Message) {
	parts := strings.Split(m.Topic(), "/")
	id := parts[1]
	problem := checkPayload(id, m.Payload())
	o.mu.Lock()
	defer o.mu.Unlock()
	if problem != "" {
		o.problems = append(o.problems, problem)
		return
	}
	var r struct {
		TS int64 `json:"ts"`
	}
	_ = json.Unmarshal(m.Payload(), &r) // checked above
	if o.ts[id] == nil {
		o.ts[id] = map[int64]bool{}
	}
	o.ts[id][r.TS] = true
}

// checkPayload returns what is wrong with a telemetry payload, or "".
func checkPayload(id string, payload []byte) string {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var r map[string]any
	if err := dec.Decode(&r); err != nil {
		return fmt.Sprintf("%s: payload %q: %v", id, payload, err)
	}
	ts, ok := r[FieldTS].(json.Number)
	if _, err := ts.Int64(); !ok || err != nil {
		return fmt.Sprintf("%s: ts %v is not Unix milliseconds", id, r[FieldTS])
	}
	rssi, ok := r[FieldRSSI].(json.Number)
	if v, err := rssi.Int64(); !ok || err != nil || v < MinRSSI || v > MaxRSSI {
		return fmt.Sprintf("%s: rssi %v", id, r[FieldRSSI])
	}
	want := "heart_rate"
	if strings.Contains(id, "thermo") {
		want = "temperature"
	}
	if _, ok := r[want]; !ok {
		return fmt.Sprintf("%s: no %s in %s", id, want, payload)
	}
	return ""
}

// received returns the number of distinct readings received from id.
func (o *observer) received(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ts[id])
}

func (o *observer) problemList() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.problems...)
}

func testConfig(hub *fakeHub, b *testBroker, qos byte) Config {
	cfg := DefaultConfig()
	cfg.HubURL = hub.srv.URL
	cfg.MQTTURL = "tcp://" + b.addr
	cfg.Token = adminToken
	cfg.Thermostats = 3
	cfg.Wearables = 2
	cfg.Interval = 50 * time.Millisecond
	cfg.Duration = time.Second
	cfg.QoS = qos
	cfg.Seed = 42
	cfg.ReconnectInterval = 100 * time.Millisecond
	return cfg
}

func TestFleetPublishesTelemetry(t *testing.T) {
	tests := []struct {
		name string
		qos  byte
	}{
		{name: "qos 0", qos: 0},
		{name: "qos 1", qos: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newFakeHub(t, "sim-thermo-0002") // exists: provisioning must rotate its token
			broker := startBroker(t, "127.0.0.1:0", hub)
			obs := startObserver(t, broker.addr)
			f, err := New(testConfig(hub, broker, tc.qos), testLogger(t))
			require.NoError(t, err)

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			require.NoError(t, f.Run(ctx))

			created, rotated, _ := hub.snapshot()
			require.ElementsMatch(t, []string{"sim-thermo-0001", "sim-thermo-0003", "sim-wearable-0001", "sim-wearable-0002"}, created)
			require.Equal(t, []string{"sim-thermo-0002"}, rotated)

			st := f.Stats()
			require.Zero(t, st.ProvisionFailed)
			require.Zero(t, st.Connected, "disconnected after Run")
			wantTypes := map[string]string{
				"sim-thermo-0001": TypeThermostat, "sim-thermo-0002": TypeThermostat, "sim-thermo-0003": TypeThermostat,
				"sim-wearable-0001": TypeWearable, "sim-wearable-0002": TypeWearable,
			}
			require.Len(t, st.Devices, len(wantTypes))
			var sent, acked, errs int64
			for _, d := range st.Devices {
				require.Equal(t, wantTypes[d.ID], d.Type, d.ID)
				require.GreaterOrEqual(t, d.Sent, int64(5), "%s published every interval", d.ID)
				require.Equal(t, d.Sent, d.Acked, "%s: every reading acknowledged", d.ID)
				require.Zero(t, d.Errors, d.ID)
				sent, acked, errs = sent+d.Sent, acked+d.Acked, errs+d.Errors
			}
			require.Equal(t, sent, st.Sent)
			require.Equal(t, acked, st.Acked)
			require.Equal(t, errs, st.Errors)

			for _, d := range st.Devices {
				eventually(t, 5*time.Second, func() bool { return obs.received(d.ID) >= int(d.Acked) },
					"%s: %d acked, %d received", d.ID, d.Acked, obs.received(d.ID))
				require.LessOrEqual(t, obs.received(d.ID), int(d.Sent), "%s: distinct timestamps", d.ID)
			}
			require.Empty(t, obs.problemList())
		})
	}
}

func TestFleetSurvivesBrokerRestart(t *testing.T) {
	hub := newFakeHub(t)
	broker := startBroker(t, "127.0.0.1:0", hub)
	cfg := testConfig(hub, broker, 1)
	cfg.Duration = 0 // until cancelled
	f, err := New(cfg, testLogger(t))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	runErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { runErr <- f.Run(ctx) })

	const n = 5
	allAcked := func(min int64) func() bool {
		return func() bool {
			st := f.Stats()
			if len(st.Devices) != n || st.Connected != n {
				return false
			}
			for _, d := range st.Devices {
				if d.Acked < min {
					return false
				}
			}
			return true
		}
	}
	eventually(t, 10*time.Second, allAcked(3), "fleet publishing: %+v", f.Stats())

	broker.stop()
	eventually(t, 10*time.Second, func() bool { return f.Stats().Connected == 0 }, "devices notice the broker is gone")
	down := f.Stats()
	eventually(t, 10*time.Second, func() bool { return f.Stats().Sent >= down.Sent+int64(3*n) },
		"devices keep taking readings while the broker is away")
	queued := f.Stats()
	require.Greater(t, queued.Sent-queued.Acked-queued.Errors, int64(2*n), "readings wait for their PUBACK")

	startBroker(t, broker.addr, hub)
	eventually(t, 20*time.Second, func() bool {
		st := f.Stats()
		return st.Connected == n && st.Acked > queued.Sent+int64(3*n)
	}, "fleet back and catching up: %+v", f.Stats())

	cancel()
	select {
	case err := <-runErr:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	st := f.Stats()
	require.Zero(t, st.Errors, "QoS 1 readings taken while the broker was away are resent, not lost")
	require.Equal(t, st.Sent, st.Acked)
}

func TestFleetProvisioningFails(t *testing.T) {
	hub := newFakeHub(t)
	cfg := DefaultConfig()
	cfg.HubURL = hub.srv.URL
	cfg.MQTTURL = "tcp://127.0.0.1:1" // never reached
	cfg.Token = "not-the-admin-token"
	cfg.Thermostats, cfg.Wearables = 2, 1
	f, err := New(cfg, testLogger(t))
	require.NoError(t, err)

	err = f.Run(t.Context())
	require.ErrorIs(t, err, ErrProvisioning)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 401, apiErr.Status)
	st := f.Stats()
	require.Equal(t, 3, st.ProvisionFailed)
	require.Empty(t, st.Devices)
	_, _, requests := hub.snapshot()
	require.Equal(t, 3, requests, "401 is not retried")

	require.ErrorIs(t, f.Run(t.Context()), ErrAlreadyRun)
}

func TestFleetSkipsDevicesThatFailToProvision(t *testing.T) {
	hub := newFakeHub(t)
	hub.failCreate("sim-wearable-0001", 100)
	broker := startBroker(t, "127.0.0.1:0", hub)
	cfg := testConfig(hub, broker, 1)
	cfg.ProvisionAttempts = 2
	cfg.Duration = 300 * time.Millisecond
	f, err := New(cfg, testLogger(t))
	require.NoError(t, err)

	require.NoError(t, f.Run(t.Context()))
	st := f.Stats()
	require.Equal(t, 1, st.ProvisionFailed)
	require.Len(t, st.Devices, 4)
	for _, d := range st.Devices {
		require.NotEqual(t, "sim-wearable-0001", d.ID)
		require.Positive(t, d.Acked, d.ID)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.Token = "t"
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error, "" for valid
	}{
		{name: "defaults with token", mutate: func(*Config) {}},
		{name: "no token", mutate: func(c *Config) { c.Token = "" }, want: "token"},
		{name: "bad hub URL", mutate: func(c *Config) { c.HubURL = "localhost:8080" }, want: "hub URL"},
		{name: "bad mqtt scheme", mutate: func(c *Config) { c.MQTTURL = "http://localhost:1883" }, want: "unsupported scheme"},
		{name: "no devices", mutate: func(c *Config) { c.Thermostats, c.Wearables = 0, 0 }, want: "at least one device"},
		{name: "negative count", mutate: func(c *Config) { c.Wearables = -1 }, want: "no negative"},
		{name: "zero interval", mutate: func(c *Config) { c.Interval = 0 }, want: "interval"},
		{name: "qos 3", mutate: func(c *Config) { c.QoS = 3 }, want: "qos"},
		{name: "negative duration", mutate: func(c *Config) { c.Duration = -time.Second }, want: "duration"},
		{name: "zero concurrency", mutate: func(c *Config) { c.ProvisionConcurrency = 0 }, want: "concurrency"},
		{name: "only wearables", mutate: func(c *Config) { c.Thermostats = 0 }},
		{name: "empty prefix", mutate: func(c *Config) { c.IDPrefix = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDeviceID(t *testing.T) {
	require.Equal(t, "sim-thermo-0001", deviceID("sim", "thermo", 1))
	require.Equal(t, "wearable-0042", deviceID("", "wearable", 42))
}

func TestFleetWithoutBroker(t *testing.T) {
	tests := []struct {
		name string
		qos  byte
	}{
		{name: "qos 0 readings are dropped", qos: 0},
		{name: "qos 1 readings wait, then count as unacknowledged", qos: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newFakeHub(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			closed := ln.Addr().String()
			require.NoError(t, ln.Close()) // nothing listens there any more

			cfg := testConfig(hub, &testBroker{addr: closed}, tc.qos)
			cfg.Duration = 500 * time.Millisecond
			cfg.DrainTimeout = 100 * time.Millisecond
			cfg.ConnectTimeout = 100 * time.Millisecond
			f, err := New(cfg, testLogger(t))
			require.NoError(t, err)

			require.NoError(t, f.Run(t.Context()))
			st := f.Stats()
			require.Len(t, st.Devices, 5)
			for _, d := range st.Devices {
				require.Positive(t, d.Sent, d.ID)
				require.Zero(t, d.Acked, d.ID)
				require.Equal(t, d.Sent, d.Errors, "%s: every reading accounted for", d.ID)
			}
		})
	}
}

func TestFleetStoppedWhileProvisioning(t *testing.T) {
	hub := newFakeHub(t)
	hub.failCreate("sim-thermo-0001", 1000) // retried until the context ends
	cfg := testConfig(hub, &testBroker{addr: "127.0.0.1:1"}, 1)
	cfg.Thermostats, cfg.Wearables = 1, 0
	cfg.ProvisionAttempts = 1000
	f, err := New(cfg, testLogger(t))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { done <- f.Run(ctx) })
	eventually(t, 5*time.Second, func() bool { _, _, n := hub.snapshot(); return n >= 1 }, "provisioning started")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	require.Empty(t, f.Stats().Devices)
}
