package load

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// startMochi runs a real mochi-mqtt broker on a loopback port that admits
// user "dev" with password "pw" only.
func startMochi(t *testing.T) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{
		Auth: auth.AuthRules{{Username: "dev", Password: "pw", Allow: true}},
		ACL:  auth.ACLRules{{Filters: auth.Filters{"#": auth.ReadWrite}}},
	}}))
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(ln))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })
	return ln.Address()
}

// recorder is a Handler that keeps what it is told.
type recorder struct {
	mu       sync.Mutex
	pubacks  []uint16
	messages map[string][]byte
}

func (r *recorder) Puback(id uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubacks = append(r.pubacks, id)
}

func (r *recorder) Message(topic, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.messages == nil {
		r.messages = map[string][]byte{}
	}
	r.messages[string(topic)] = bytes.Clone(payload)
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubacks), len(r.messages)
}

func TestClientAgainstMochi(t *testing.T) {
	addr := startMochi(t)
	ctx := context.Background()
	d := Dialer{Addr: addr, LocalIP: SourceIP(3, 8), KeepAlive: 30 * time.Second}

	_, err := d.Dial(ctx, "intruder", "dev", "wrong")
	var ce *ConnectError
	require.True(t, errors.As(err, &ce), "a refused CONNECT is a ConnectError: %v", err)
	require.NotZero(t, ce.Code)

	sub, err := d.Dial(ctx, "sub", "dev", "pw")
	require.NoError(t, err)
	require.NoError(t, sub.Subscribe("devices/+/telemetry", 1))
	var got recorder
	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(t, sub.ReadLoop(&got)) })
	t.Cleanup(func() { sub.Disconnect(); wg.Wait() })

	pub, err := d.Dial(ctx, "pub", "dev", "pw")
	require.NoError(t, err)
	var acks recorder
	wg.Go(func() { require.NoError(t, pub.ReadLoop(&acks)) })
	t.Cleanup(func() { pub.Disconnect() })

	big := bytes.Repeat([]byte("x"), 70_000) // a remaining length of three bytes
	var tracked []uint16
	for i, tc := range []struct {
		topic   string
		qos     byte
		payload []byte
	}{
		{"devices/a/telemetry", 0, []byte(`{"t":1}`)},
		{"devices/b/telemetry", 1, []byte(`{"t":2}`)},
		{"devices/c/telemetry", 1, big},
	} {
		id, err := pub.Publish(tc.topic, tc.qos, tc.payload, func(id uint16) { tracked = append(tracked, id) })
		require.NoError(t, err)
		require.Equal(t, tracked[i], id)
		if tc.qos == 0 {
			require.Zero(t, id)
		} else {
			require.NotZero(t, id)
		}
	}
	require.NoError(t, pub.Ping())
	testenv.Eventually(t, 5*time.Second, "two PUBACKs and three messages", func() bool {
		a, _ := acks.counts()
		_, m := got.counts()
		return a == 2 && m == 3
	})
	require.Equal(t, tracked[1:], acks.pubacks)
	require.Equal(t, `{"t":1}`, string(got.messages["devices/a/telemetry"]))
	require.Equal(t, big, got.messages["devices/c/telemetry"])
}

func TestFleetPublishesAndCountsAcks(t *testing.T) {
	addr := startMochi(t)
	// The broker admits one identity, so the fleet is one device.
	f, res, err := Connect(context.Background(), FleetConfig{Addr: addr, Devices: []Device{{ID: "dev", Token: "pw"}}, SourceIPs: 4})
	require.NoError(t, err)
	require.Equal(t, 1, res.Connected)
	defer f.Close()
	out, err := f.Publish(context.Background(), PublishConfig{Rate: 500, Duration: 200 * time.Millisecond, QoS: 1})
	require.NoError(t, err)
	require.Equal(t, int64(100), out.Sent)
	require.Equal(t, int64(100), out.Acked)
	require.Zero(t, out.Unacked)
	require.Equal(t, int64(100), out.Ack.Count)
	require.LessOrEqual(t, out.FirstTS, out.LastTS)
	require.GreaterOrEqual(t, out.LastTS-out.FirstTS, int64(99), "one device never repeats a timestamp")

	_, _, err = Connect(context.Background(), FleetConfig{Addr: addr, Devices: []Device{{ID: "x", Token: "bad"}}})
	require.Error(t, err, "a fleet where nobody connects is an error")
}
