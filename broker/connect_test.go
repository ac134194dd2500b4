package broker

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// from makes a paho client connect from a given loopback address.
func from(ip string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) {
		o.SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}})
	}
}

// TestBadLoginsDoNotLockOutOthers: 40 bad-password CONNECTs from one
// address spend that address's failed-login bucket and nothing else: a
// valid device from another address still connects, though the global
// connect bucket is small. The flooding address itself is refused before
// its credentials are checked once its bucket is spent.
func TestBadLoginsDoNotLockOutOthers(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ConnectRate, c.ConnectBurst = 0.001, 20
		c.AuthFailureRate, c.AuthFailureBurst = 0.001, 20
	})
	tok := f.device(t, "good")
	f.device(t, "victim")
	refusedBadLogin, refusedRate := 0, 0
	for i := range 40 {
		_, err := f.dial(t, "bad-"+strconv.Itoa(i), "victim", "wrong", from("127.0.0.1"))
		require.Error(t, err)
		switch msg := strings.ToLower(err.Error()); {
		case strings.Contains(msg, "bad user name or password"):
			refusedBadLogin++
		case strings.Contains(msg, "unavailable"):
			refusedRate++
		default:
			t.Fatalf("connect %d: %v", i, err)
		}
	}
	require.Equal(t, 20, refusedBadLogin)
	require.Equal(t, 20, refusedRate)
	require.Equal(t, 20.0, f.metric(t, "telehub_mqtt_auth_failures_total"))
	require.Equal(t, 20.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="auth_failure_rate"}`))

	_, err := f.dial(t, "good-1", "good", tok, from("127.0.0.2"))
	require.NoError(t, err, "a valid device from another address connects")
	host, port := hostPort(t, f.b.Addr())
	out := runTool(t, "mosquitto_pub", "-A", "127.0.0.3", "-h", host, "-p", port, "-u", "good", "-P", tok, "-i", "good-2",
		"-t", "devices/good/telemetry", "-m", `{"v":1}`)
	require.Empty(t, strings.TrimSpace(out), "mosquitto_pub from a third address")
	testenv.Eventually(t, 5*time.Second, "the QoS 0 reading of mosquitto_pub ingested", func() bool { return len(f.ingested.of("good")) == 1 })
	require.Zero(t, f.metric(t, `telehub_mqtt_limit_hits_total{limit="connect_rate"}`), "failed logins spent none of the global bucket")
}

// TestClientConnectRate: one identity reconnecting fast is slowed down by
// its own bucket; another device is not.
func TestClientConnectRate(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ClientConnectRate, c.ClientConnectBurst = 0.001, 2 })
	tok := f.device(t, "loop")
	tok2 := f.device(t, "calm")
	for i, want := range []bool{true, true, false} {
		_, err := f.dial(t, "loop-"+strconv.Itoa(i), "loop", tok, nil)
		require.Equal(t, want, err == nil, "connect %d: %v", i, err)
	}
	_, err := f.dial(t, "", "calm", tok2, nil)
	require.NoError(t, err)
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="client_connect_rate"}`))
	require.Zero(t, f.metric(t, "telehub_mqtt_auth_failures_total"))
}
