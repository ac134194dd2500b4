package forward

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// broker is a plain mochi MQTT broker on loopback, standing for "any MQTT
// broker" upstream; it records what is published to it.
type broker struct {
	srv  *mqtt.Server
	addr string

	mu   sync.Mutex
	msgs []message
}

type message struct {
	topic   string
	payload []byte
}

func startBroker(t *testing.T, addr string) *broker {
	t.Helper()
	b := &broker{srv: mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})}
	require.NoError(t, b.srv.AddHook(new(auth.AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	require.NoError(t, b.srv.AddListener(l))
	require.NoError(t, b.srv.Subscribe("devices/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		b.mu.Lock()
		b.msgs = append(b.msgs, message{pk.TopicName, append([]byte(nil), pk.Payload...)})
		b.mu.Unlock()
	}))
	require.NoError(t, b.srv.Serve())
	b.addr = l.Address()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *broker) received() []message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]message(nil), b.msgs...)
}

func openLog(t *testing.T) *wal.Log {
	t.Helper()
	l, err := wal.Open(t.TempDir(), wal.Options{MaxBytes: 1 << 20, Consumers: []string{wal.DefaultConsumer, Consumer}}, testenv.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func testConfig(url string) Config {
	c := DefaultConfig()
	c.URL, c.ClientID = url, "edge-test"
	c.RetryMin, c.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	return c
}

func start(t *testing.T, cfg Config, l *wal.Log, hub *live.Hub) (*Forwarder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	var stream Stream // no typed nil: a nil hub means no stream
	if hub != nil {
		stream = hub
	}
	f, err := New(cfg, l, stream, reg, testenv.Logger(t))
	require.NoError(t, err)
	f.Start(context.Background())
	t.Cleanup(f.Stop)
	return f, reg
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// TestForwardsTheLogInOrderToAnyBroker: records logged before and after
// the forwarder starts arrive at a plain MQTT broker in log order, on the
// device's topic, in the hub's own telemetry format (exact timestamps and
// value types), and the forwarder's checkpoint moves past them.
func TestForwardsTheLogInOrderToAnyBroker(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	l := openLog(t)
	appendReadings := func(from, to int) {
		for i := from; i < to; i++ {
			rec := ingest.AppendRecord(nil, "d"+strconv.Itoa(i%3), "thermostat", []ingest.Point{{
				Time: t0.Add(time.Duration(i) * time.Second), Fields: []ingest.Field{{Name: "n", Value: ingest.Number(float64(i))}}}})
			_, err := l.Append(context.Background(), rec)
			require.NoError(t, err)
		}
	}
	appendReadings(0, 30)
	f, _ := start(t, testConfig("mqtt://"+b.addr), l, nil)
	appendReadings(30, 60)

	testenv.Eventually(t, 10*time.Second, "60 messages upstream", func() bool { return len(b.received()) >= 60 })
	testenv.Eventually(t, 5*time.Second, "the checkpoint passes every acknowledged record", func() bool { return f.Lag() == 0 })
	got := b.received()
	require.Len(t, got, 60, "each record once: the connection never broke")
	for i, m := range got {
		require.Equal(t, "devices/d"+strconv.Itoa(i%3)+"/telemetry", m.topic)
		pts, err := ingest.Decode(m.payload, ingest.FormatAuto, time.Now(), ingest.DefaultLimits())
		require.NoError(t, err, "%s", m.payload)
		require.Len(t, pts, 1)
		require.Equal(t, t0.Add(time.Duration(i)*time.Second), pts[0].Time, "the exact timestamp")
		require.Equal(t, float64(i), pts[0].Fields[0].Value.Num, "in log order")
	}
}

// TestForwardsAlertsButNotOtherLiveEvents: with alerts on, alert events of
// the live stream go to the alert topic as they are; readings and other
// kinds do not.
func TestForwardsAlertsButNotOtherLiveEvents(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	hub := live.New(64)
	cfg := testConfig("tcp://" + b.addr)
	cfg.Alerts = true
	start(t, cfg, openLog(t), hub)

	alert, err := live.Event(live.KindAlert, "d1", t0, map[string]any{"rule": "too-hot", "state": "firing"})
	require.NoError(t, err)
	presence, err := live.Event(live.KindPresence, "d1", t0, map[string]any{"online": true})
	require.NoError(t, err)
	hub.Publish(presence, alert, presence)
	testenv.Eventually(t, 10*time.Second, "the alert upstream", func() bool { return len(b.received()) >= 1 })
	got := b.received()
	require.Len(t, got, 1)
	require.Equal(t, "devices/d1/alerts", got[0].topic)
	require.JSONEq(t, string(alert.Body), string(got[0].payload))
}

// TestKeepsTheBacklogWhileTheUpstreamIsAway: with nothing listening, the
// forwarder retries with backoff, reports itself disconnected, and the
// log keeps every record; once a broker listens there, they all arrive.
func TestKeepsTheBacklogWhileTheUpstreamIsAway(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	l := openLog(t)
	f, reg := start(t, testConfig("mqtt://"+addr), l, nil)
	for i := range 20 {
		_, err := l.Append(context.Background(), ingest.AppendRecord(nil, "d1", "t", []ingest.Point{{
			Time: t0.Add(time.Duration(i)), Fields: []ingest.Field{{Name: "ok", Value: ingest.Bool(true)}}}}))
		require.NoError(t, err)
	}
	m := func(name string) float64 { return metricValue(t, reg, name) }
	testenv.Eventually(t, 10*time.Second, "connection attempts fail and are retried", func() bool {
		return m("telehub_forward_failures_total") >= 3
	})
	require.Equal(t, 0.0, m("telehub_forward_connected"))
	require.Equal(t, uint64(20), f.Lag())
	require.Equal(t, 20.0, m("telehub_forward_lag_records"))

	b := startBroker(t, addr)
	testenv.Eventually(t, 10*time.Second, "the backlog arrives", func() bool { return len(b.received()) == 20 })
	testenv.Eventually(t, 5*time.Second, "and is committed", func() bool { return f.Lag() == 0 })
	require.Equal(t, 1.0, m("telehub_forward_connected"))
	require.Equal(t, 20.0, m("telehub_forward_readings_total"))
}

// metricValue reads one sample of reg's Prometheus text.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	text, err := testenv.MetricsText(reg)
	require.NoError(t, err)
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}
