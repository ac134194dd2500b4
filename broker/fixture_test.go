package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// fixture is a broker on loopback with a real registry, integration store
// and presence tracker in a temporary state database.
type fixture struct {
	b        *Broker
	reg      *devices.Registry
	ints     *devices.Integrations
	metrics  *prometheus.Registry
	ingested *ingestLog
}

// ingestLog records what reached the ingest pipeline. refuse, when set,
// decides an error for a payload (nothing is recorded then); commit, when
// set, gives the commit IngestAsync returns (else one already done).
type ingestLog struct {
	mu     sync.Mutex
	got    map[string][]string
	refuse func(payload string) error
	commit func() wal.Commit
}

func (l *ingestLog) Ingest(_ context.Context, dev ingest.Device, payload []byte, _ ingest.Format) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuse != nil {
		if err := l.refuse(string(payload)); err != nil {
			return 0, err
		}
	}
	l.got[dev.ID] = append(l.got[dev.ID], string(payload))
	return 1, nil
}

func (l *ingestLog) IngestNoWait(ctx context.Context, dev ingest.Device, payload []byte, f ingest.Format) (int, error) {
	return l.Ingest(ctx, dev, payload, f)
}

func (l *ingestLog) IngestAsync(ctx context.Context, dev ingest.Device, payload []byte, f ingest.Format) (int, wal.Commit, error) {
	n, err := l.Ingest(ctx, dev, payload, f)
	l.mu.Lock()
	commit := l.commit
	l.mu.Unlock()
	if err != nil || commit == nil {
		return n, wal.Commit{}, err
	}
	return n, commit(), nil
}

func (l *ingestLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got[id]...)
}

// newFixture starts a broker; edit adjusts the configuration first.
func newFixture(t testing.TB, edit func(*Config)) *fixture {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	f := &fixture{metrics: prometheus.NewRegistry(), ingested: &ingestLog{got: map[string][]string{}}}
	f.reg, err = devices.New(db)
	require.NoError(t, err)
	f.ints, err = devices.NewIntegrations(db)
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.ClientConnectRate = 0 // tests connect one device dozens of times a second; the tests of this limit set it
	if edit != nil {
		edit(&cfg)
	}
	require.NoError(t, cfg.Validate())
	f.b, err = New(cfg, f.reg, f.ingested, devices.NewPresence(), testenv.Logger(t), WithIntegrations(f.ints), WithMetrics(f.metrics))
	require.NoError(t, err)
	require.NoError(t, f.b.Start())
	t.Cleanup(func() { f.b.Close() })
	return f
}

func (f *fixture) device(t testing.TB, id string) string {
	t.Helper()
	_, tok, err := f.reg.Create(devices.Device{ID: id, Type: "thermostat"})
	require.NoError(t, err)
	return tok
}

func (f *fixture) integration(t testing.TB, id string, pub, sub []string) string {
	t.Helper()
	_, secret, err := f.ints.Create(devices.Integration{ID: id, Publish: pub, Subscribe: sub}, "test")
	require.NoError(t, err)
	return secret
}

// metric returns the value of a metric by its full name, labels included.
func (f *fixture) metric(t testing.TB, name string) float64 {
	t.Helper()
	text, err := testenv.MetricsText(f.metrics)
	require.NoError(t, err)
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var x float64
			_, err := fmt.Sscan(v, &x)
			require.NoError(t, err)
			return x
		}
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}

// client is a paho MQTT 3.1.1 client that records what it receives.
type client struct {
	paho.Client
	lost chan struct{}

	mu  sync.Mutex
	got []paho.Message
}

// dial connects a paho client; clientID empty takes the username.
func (f *fixture) dial(t testing.TB, clientID, user, pass string, edit func(*paho.ClientOptions)) (*client, error) {
	t.Helper()
	if clientID == "" {
		clientID = user + "-c"
	}
	c := &client{lost: make(chan struct{})}
	opts := paho.NewClientOptions().AddBroker("tcp://" + f.b.Addr()).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.add(m) }).
		SetConnectionLostHandler(func(paho.Client, error) { close(c.lost) })
	if edit != nil {
		edit(opts)
	}
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func (c *client) add(m paho.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, m)
}

// topics returns the topics of the messages received so far.
func (c *client) topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.got))
	for i, m := range c.got {
		out[i] = m.Topic()
	}
	return out
}

// received reports whether a message on topic has arrived.
func (c *client) received(topic string) bool {
	for _, tp := range c.topics() {
		if tp == topic {
			return true
		}
	}
	return false
}

// subscribe subscribes and returns the SUBACK code of the filter.
func (c *client) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	require.True(t, tok.WaitTimeout(5*time.Second), "SUBACK for %q", filter)
	require.NoError(t, tok.Error())
	res := tok.(*paho.SubscribeToken).Result()
	code, ok := res[filter]
	if f, shared := unshare(filter); shared && !ok {
		code, ok = res[f] // paho keys shared subscriptions by the shared filter
	}
	require.True(t, ok, "SUBACK has a code for %q: %v", filter, res)
	return code
}

func (c *client) publish(t testing.TB, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	require.True(t, tok.WaitTimeout(5*time.Second), "publish %q", topic)
	require.NoError(t, tok.Error())
}

func (c *client) isLost() bool {
	select {
	case <-c.lost:
		return true
	default:
		return false
	}
}
