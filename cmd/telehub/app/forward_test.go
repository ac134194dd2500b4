package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/cmd/telehub/config"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest/store"
	"github.com/telehub/telehub/internal/testenv"
)

// edgeDevice publishes numbered readings QoS 1 to the edge: value n at
// ts = base + n ms, so that a reading is known by its value and its time.
type edgeDevice struct {
	id     string
	client paho.Client
	mu     sync.Mutex
	acked  int // readings 0..acked-1 are acknowledged by the edge
	err    error
}

// run publishes one reading at a time until stop is closed. The ticker
// paces the load; nothing waits on it for synchronisation.
func (d *edgeDevice) run(stop <-chan struct{}, base int64) {
	tick := time.NewTicker(20 * time.Millisecond) // under the default 100 messages/s per device
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		tok := d.client.Publish("devices/"+d.id+"/telemetry", 1, false, fmt.Sprintf(`{"ts":%d,"value":%d}`, base+int64(n), n))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			d.mu.Lock()
			d.err = fmt.Errorf("reading %d not acknowledged by the edge: %v", n, tok.Error())
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		d.acked = n + 1
		d.mu.Unlock()
	}
}

func (d *edgeDevice) count() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked, d.err
}

// storedReadings returns the values stored for a device, in time order, each
// checked to sit at its own timestamp.
func storedReadings(t *testing.T, a *App, id string, base int64) []int {
	t.Helper()
	s, err := a.Store().Query(id, "value", time.UnixMilli(base-1), time.UnixMilli(base+1e7))
	require.NoError(t, err)
	out := make([]int, len(s))
	for i, smp := range s {
		out[i] = int(smp.Value.Num)
		require.Equal(t, base+int64(out[i]), smp.Time.UnixMilli(), "%s: value %d at its own time", id, out[i])
	}
	return out
}

// liveValues returns, per device, the reading values the hub's live
// stream holds up to now, in the order the hub received them.
func liveValues(t *testing.T, a *App) map[string][]int {
	t.Helper()
	m, err := testenv.Metrics("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	last := uint64(m["telehub_live_last_seq"])
	out := map[string][]int{}
	for since := uint64(0); since < last; {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+"/api/v1/events/poll?since="+strconv.FormatUint(since, 10), nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			require.NoError(t, err)
		}
		var page struct {
			Messages []struct {
				DeviceID string         `json:"device_id"`
				Fields   map[string]any `json:"fields"`
			} `json:"messages"`
			Next uint64 `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		cancel()
		require.NoError(t, err)
		for _, m := range page.Messages {
			if v, ok := m.Fields["value"].(float64); ok {
				out[m.DeviceID] = append(out[m.DeviceID], int(v))
			}
		}
		since = page.Next
	}
	return out
}

// requireInOrder checks that the values arrived in order: duplicates (a
// resend after the uplink broke) may only repeat what already arrived.
func requireInOrder(t *testing.T, instance string, got map[string][]int) {
	t.Helper()
	for id, vs := range got {
		highest := vs[0] - 1 // a restarted upstream starts where the edge resumed
		for i, v := range vs {
			if v > highest {
				require.Equal(t, highest+1, v, "%s %s: reading %d arrived before %d (position %d)", instance, id, v, highest+1, i)
				highest = v
			}
		}
	}
}

// TestForwardStoreAndForward: an edge hub forwards to an upstream hub over
// MQTT with TLS, authenticated as an integration. The upstream is stopped
// while devices keep publishing to the edge, and restarted on the same
// port and data directory. Every reading the edge acknowledged reaches the
// upstream's store exactly once, each at its own timestamp, and the
// upstream received each device's readings in order.
func TestForwardStoreAndForward(t *testing.T) {
	pki := testenv.NewPKI(t)
	cert, key := pki.Server(t, "upstream")
	upDir := t.TempDir()
	tlsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	upstreamCfg := func(c *config.Config) {
		c.MQTT.TLSAddr, c.MQTT.TLSCert, c.MQTT.TLSKey = tlsAddr, cert, key
	}
	up := startHubWith(t, upDir, upstreamCfg)
	ids := []string{"fw-a", "fw-b", "fw-c"}
	for _, id := range ids {
		createDevice(t, up, id, "thermostat")
	}
	_, secret, err := up.integrations.Create(devices.Integration{ID: "edge-1", Publish: []string{"devices/+/telemetry"}}, "test")
	require.NoError(t, err)
	secretFile := filepath.Join(t.TempDir(), "upstream.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))

	edge := startHubWith(t, t.TempDir(), func(c *config.Config) {
		c.Forward.URL = "mqtts://" + tlsAddr
		c.Forward.Username, c.Forward.PasswordFile, c.Forward.CAFile = "edge-1", secretFile, pki.CAFile
		c.Forward.ClientID = "edge-1"
		c.Forward.RetryMin, c.Forward.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	})
	edgeMetric := func(name string) float64 {
		m, err := testenv.Metrics("http://" + edge.HTTPAddr() + "/metrics")
		require.NoError(t, err)
		return m[name]
	}

	base := time.Now().Add(-time.Hour).UnixMilli()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	devs := make([]*edgeDevice, len(ids))
	for i, id := range ids {
		c, err := connect(t, edge, id, createDevice(t, edge, id, "thermostat"))
		require.NoError(t, err)
		devs[i] = &edgeDevice{id: id, client: c}
		wg.Go(func() { devs[i].run(stop, base) })
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)
	ackedAtLeast := func(n int) func() bool {
		return func() bool {
			for _, d := range devs {
				c, err := d.count()
				require.NoError(t, err)
				if c < n {
					return false
				}
			}
			return true
		}
	}

	// Uplink up: readings flow through.
	testenv.Eventually(t, 10*time.Second, "readings forwarded to the upstream", func() bool {
		for _, id := range ids {
			if len(storedReadings(t, up, id, base)) < 20 {
				return false
			}
		}
		return true
	})
	require.Equal(t, 1.0, edgeMetric("telehub_forward_connected"))
	first := liveValues(t, up)

	// A reported state goes up too, but this upstream's ACL does not let
	// the edge publish state: it is refused there and costs the uplink
	// nothing (the edge sends it at QoS 0, which a refusal does not
	// disconnect).
	upMetric := func(name string) float64 {
		m, err := testenv.Metrics("http://" + up.HTTPAddr() + "/metrics")
		require.NoError(t, err)
		return m[name]
	}
	require.True(t, devs[0].client.Publish("devices/fw-a/state", 1, false, `{"mode":"heat"}`).WaitTimeout(5*time.Second))
	testenv.Eventually(t, 10*time.Second, "the upstream refuses the state the edge relays", func() bool {
		return upMetric(`telehub_mqtt_acl_denied_total{action="publish"}`) >= 1
	})
	testenv.Eventually(t, 10*time.Second, "more readings forwarded after the refusal", func() bool {
		return len(storedReadings(t, up, "fw-a", base)) >= 40
	})
	require.Equal(t, 1.0, edgeMetric("telehub_forward_connects_total"), "the uplink was not dropped")
	// Nor may it subscribe to commands or desired state: both refusals are
	// counted, and the readings flow all the same.
	testenv.Eventually(t, 10*time.Second, "the refused subscriptions counted", func() bool {
		return edgeMetric("telehub_forward_command_subscribe_denied_total") == 1 &&
			edgeMetric("telehub_forward_desired_subscribe_denied_total") == 1
	})

	// Uplink cut under load: the edge keeps acknowledging, the backlog grows.
	up.Stop()
	testenv.Eventually(t, 10*time.Second, "the edge sees the uplink down", func() bool {
		return edgeMetric("telehub_forward_connected") == 0
	})
	cut, _ := devs[0].count()
	testenv.Eventually(t, 10*time.Second, "devices keep publishing to the edge", ackedAtLeast(cut+100))
	require.Positive(t, edgeMetric("telehub_forward_lag_records"), "the log holds what the upstream has not acknowledged")

	// Uplink restored on the same port and data directory.
	up = startHubWith(t, upDir, upstreamCfg)
	testenv.Eventually(t, 10*time.Second, "the edge reconnects", func() bool {
		return edgeMetric("telehub_forward_connected") == 1
	})
	restored, _ := devs[0].count()
	testenv.Eventually(t, 10*time.Second, "devices publish after the restore", ackedAtLeast(restored+50))
	stopLoad()

	total := 0
	for _, d := range devs {
		n, err := d.count()
		require.NoError(t, err)
		total += n
		testenv.Eventually(t, 20*time.Second, "upstream holds every reading of "+d.id, func() bool {
			return len(storedReadings(t, up, d.id, base)) >= n
		})
		got := storedReadings(t, up, d.id, base)
		require.Len(t, got, n, "%s: every reading the edge acknowledged, exactly once", d.id)
		for i, v := range got {
			require.Equal(t, i, v, "%s: readings in time order", d.id)
		}
	}
	requireInOrder(t, "first upstream", first)
	second := liveValues(t, up)
	requireInOrder(t, "restarted upstream", second)
	for _, id := range ids {
		require.NotEmpty(t, second[id], "the restarted upstream received %s's backlog", id)
	}
	testenv.Eventually(t, 10*time.Second, "the edge's backlog is drained", func() bool {
		return edgeMetric("telehub_forward_lag_records") == 0
	})
	require.GreaterOrEqual(t, edgeMetric("telehub_forward_readings_total"), float64(total))
	require.GreaterOrEqual(t, edgeMetric("telehub_forward_failures_total"), 1.0)
}

// TestRelayedTelemetry: an integration whose ACL covers a device's
// telemetry topic publishes on its behalf (an edge hub, a gateway): the
// readings of a registered device are stored as the device's; those of an
// unknown device are acknowledged and dropped, so that an in-order
// forwarder is never stuck behind them; other topics are not ingested.
func TestRelayedTelemetry(t *testing.T) {
	a := startHub(t, nil)
	createDevice(t, a, "relayed-1", "thermostat")
	_, secret, err := a.integrations.Create(devices.Integration{ID: "gateway", Publish: []string{"devices/+/telemetry", "devices/+/notes"}}, "test")
	require.NoError(t, err)
	c, err := connect(t, a, "gateway", secret)
	require.NoError(t, err)

	stored := func(id string) []store.Sample {
		s, err := a.Store().Query(id, "temperature", time.Unix(0, 0), time.Now().Add(time.Hour))
		require.NoError(t, err)
		return s
	}
	require.NoError(t, publish(t, c, "devices/unknown/telemetry", `{"temperature":1}`), "acknowledged, not refused")
	require.NoError(t, publish(t, c, "devices/relayed-1/notes", `{"temperature":2}`))
	require.NoError(t, publish(t, c, "devices/relayed-1/telemetry", `[{"ts":"2026-01-02T03:04:05.123456789Z","temperature":21.5},{"ts":1767323046000,"temperature":22}]`))
	testenv.Eventually(t, 5*time.Second, "the relayed readings stored", func() bool { return len(stored("relayed-1")) >= 2 })
	got := stored("relayed-1")
	require.Len(t, got, 2, "only the telemetry topic is ingested")
	require.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), got[0].Time, "to the nanosecond")
	require.Equal(t, 21.5, got[0].Value.Num)
	require.Equal(t, 22.0, got[1].Value.Num)
	require.Empty(t, stored("unknown"))
}
