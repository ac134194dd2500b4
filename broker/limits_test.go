package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/telehub/telehub/internal/testenv"
)

// TestKeyedLimiters: one bucket per key; when the map is full, idle
// buckets are dropped, and while none is idle new keys are not limited
// (the map never grows past its bound).
func TestKeyedLimiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newKeyedLimiters(1, 2, 3)
		for _, key := range []string{"a", "b", "c"} {
			require.True(t, k.allow(key, time.Now()))
		}
		require.True(t, k.allow("a", time.Now()))
		require.False(t, k.allow("a", time.Now()), "a's burst of 2 is spent")
		require.True(t, k.exhausted("a", time.Now()))
		require.False(t, k.exhausted("b", time.Now()), "b has a token left")
		require.Equal(t, 3, k.len())

		// Full, and nobody idle: new keys fail open.
		for range 5 {
			require.True(t, k.allow("d", time.Now()))
		}
		require.False(t, k.exhausted("d", time.Now()))
		require.Equal(t, 3, k.len(), "the map did not grow")
		require.False(t, k.allow("a", time.Now()), "a is still limited")

		time.Sleep(time.Minute) // every bucket refills: all idle
		require.True(t, k.allow("h", time.Now()))
		require.Equal(t, 1, k.len(), "idle buckets were dropped for h")
		require.False(t, k.exhausted("a", time.Now()), "a starts afresh")
	})
	off := newKeyedLimiters(0, 0, 3)
	for range 100 {
		require.True(t, off.allow("x", time.Now()))
	}
	require.Zero(t, off.len())
}

func TestLimitsConfig(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"negative", func(c *Config) { c.MaxConnections = -1 }, "negative"},
		{"rate without burst", func(c *Config) { c.MessageBurst = 0 }, "message_burst"},
		{"auth failures without burst", func(c *Config) { c.AuthFailureBurst = 0 }, "auth_failure_burst"},
		{"client connects without burst", func(c *Config) { c.ClientConnectBurst = 0 }, "client_connect_burst"},
		{"subscribes without burst", func(c *Config) { c.SubscribeBurst = 0 }, "subscribe_burst"},
		{"negative retained quota", func(c *Config) { c.MaxRetainedBytesPerClient = -1 }, "negative"},
		{"negative retained total", func(c *Config) { c.MaxRetainedBytes = -1 }, "negative"},
		{"negative subscription quota", func(c *Config) { c.MaxSubscriptionsPerClient = -1 }, "negative"},
		{"over_rate", func(c *Config) { c.OverRate = "ignore" }, "over_rate"},
		{"shallow topics", func(c *Config) { c.MaxTopicLevels = 3 }, "max_topic_levels"},
		{"short topics", func(c *Config) { c.MaxTopicBytes = 10 }, "max_topic_bytes"},
		{"no connect timeout", func(c *Config) { c.ConnectTimeout = 0 }, "connect_timeout"},
		{"tls without cert", func(c *Config) { c.TLSAddr = ":8883" }, "tls_cert"},
		{"cert without key", func(c *Config) { c.TLSCert = "c.pem" }, "tls_key"},
		{"client CA without TLS", func(c *Config) { c.ClientCA = "ca.pem" }, "client_ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			require.ErrorContains(t, c.Validate(), tc.err)
		})
	}

	// The keys sit directly under mqtt: and unknown keys are errors.
	c := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader("addr: :1884\nallow_anonymous: true\ntls_addr: :8883\nws_addr: :8083\nmessage_rate: 5\nover_rate: disconnect\nmax_connections: 10\n"))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.True(t, c.AllowAnonymous)
	require.Equal(t, ":8883", c.TLSAddr)
	require.Equal(t, ":8083", c.WSAddr)
	require.Equal(t, 5.0, c.MessageRate)
	require.Equal(t, 200, c.MessageBurst, "defaults stay")
	require.Equal(t, OverRateDisconnect, c.OverRate)
	require.Equal(t, 10, c.MaxConnections)
	dec = yaml.NewDecoder(strings.NewReader("topic_alias_maximum: 4\nmax_subscriptions_per_client: 7\nmax_retained_per_client: 3\n" +
		"max_retained_bytes: 1000\nauth_failure_rate: 0.5\nclient_connect_burst: 3\nsubscribe_rate: 2\n"))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c))
	require.Equal(t, uint16(4), c.TopicAliasMaximum)
	require.Equal(t, 7, c.MaxSubscriptionsPerClient)
	require.Equal(t, 3, c.MaxRetainedPerClient)
	require.Equal(t, int64(1000), c.MaxRetainedBytes)
	require.Equal(t, 0.5, c.AuthFailureRate)
	require.Equal(t, 3, c.ClientConnectBurst)
	require.Equal(t, 2.0, c.SubscribeRate)
	dec = yaml.NewDecoder(strings.NewReader("message_rates: 5\n"))
	dec.KnownFields(true)
	require.Error(t, dec.Decode(&c))
}

// TestMessageRateDrop: over-rate publishes are dropped and counted, the
// connection stays, and nothing over the rate reaches the pipeline.
func TestMessageRateDrop(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MessageRate, c.MessageBurst = 0.001, 3 }) // a burst of 3, then nothing
	tok := f.device(t, "fast")
	c, err := f.dial(t, "", "fast", tok, nil)
	require.NoError(t, err)
	for range 10 {
		require.NoError(t, c.Publish("devices/fast/telemetry", 0, false, `{"v":1}`).Error())
	}
	testenv.Eventually(t, 5*time.Second, "over-rate publishes counted", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="message_rate"}`) == 7
	})
	require.Len(t, f.ingested.of("fast"), 3)
	require.False(t, c.isLost(), "drop keeps the connection")

	// MQTT 5 clients learn why: PUBACK 0x96.
	bin := testenv.Tool(t, "mosquitto_pub")
	host, port := hostPort(t, f.b.Addr())
	tok5 := f.device(t, "fast5")
	cmd := exec.Command(bin, "-V", "5", "-h", host, "-p", port, "-u", "fast5", "-P", tok5, "-q", "1", "-t", "devices/fast5/telemetry", "-l")
	cmd.Stdin = strings.NewReader(strings.Repeat("{\"v\":1}\n", 5))
	out, _ := cmd.CombinedOutput()
	require.Contains(t, strings.ToLower(string(out)), "message rate too high", "%s", out)
	require.Len(t, f.ingested.of("fast5"), 3)
}

// TestMessageRateDisconnect: with over_rate: disconnect the device is cut off.
func TestMessageRateDisconnect(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MessageRate, c.MessageBurst, c.OverRate = 0.001, 2, OverRateDisconnect })
	tok := f.device(t, "flood")
	c, err := f.dial(t, "", "flood", tok, nil)
	require.NoError(t, err)
	for range 5 {
		c.Publish("devices/flood/telemetry", 0, false, `{"v":1}`)
	}
	testenv.Eventually(t, 5*time.Second, "disconnected", c.isLost)
	require.Len(t, f.ingested.of("flood"), 2)
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="message_rate"}`))
}

// TestMaxPacketBytes: a packet over mqtt.max_packet_bytes ends the
// connection and is counted; one under it passes.
func TestMaxPacketBytes(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxPacketBytes = 4096 })
	tok := f.device(t, "big")
	c, err := f.dial(t, "", "big", tok, nil)
	require.NoError(t, err)
	c.publish(t, "devices/big/telemetry", 1, false, `{"v":"`+strings.Repeat("x", 3000)+`"}`)
	c.Publish("devices/big/telemetry", 1, false, `{"v":"`+strings.Repeat("x", 5000)+`"}`)
	testenv.Eventually(t, 5*time.Second, "disconnected", c.isLost)
	require.Len(t, f.ingested.of("big"), 1)
	testenv.Eventually(t, 5*time.Second, "counted", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="packet_size"}`) == 1
	})
}

func TestMaxConnections(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxConnections = 2 })
	tok := f.device(t, "m1")
	f.device(t, "m2")
	_, err := f.dial(t, "m1-a", "m1", tok, nil)
	require.NoError(t, err)
	tok2 := f.device(t, "m3")
	_, err = f.dial(t, "", "m3", tok2, nil)
	require.NoError(t, err)
	tok4 := f.device(t, "m4")
	_, err = f.dial(t, "", "m4", tok4, nil)
	require.Error(t, err)
	require.Contains(t, strings.ToLower(err.Error()), "unavailable")
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="max_connections"}`))
	require.Equal(t, 2.0, f.metric(t, `telehub_mqtt_connections{kind="device"}`))
}

func TestConnectRate(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ConnectRate, c.ConnectBurst = 0.001, 2 })
	tok := f.device(t, "r1")
	for i, want := range []bool{true, true, false, false} {
		_, err := f.dial(t, "r1-"+string(rune('a'+i)), "r1", tok, nil)
		require.Equal(t, want, err == nil, "connect %d: %v", i, err)
	}
	require.Equal(t, 2.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="connect_rate"}`))
}

// TestConnectTimeout: a connection that never sends CONNECT is closed, and
// closing the broker does not wait for such connections.
func TestConnectTimeout(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", f.b.Addr())
	require.NoError(t, err)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "closed by the broker, not by our own deadline")

	g := newFixture(t, nil) // default timeout: 10 s
	idle, err := net.Dial("tcp", g.b.Addr())
	require.NoError(t, err)
	defer idle.Close()
	closed := make(chan struct{})
	go func() { g.b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a connection that never sent CONNECT")
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = idle.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the idle connection was closed: %v", err)
}

// TestWriteQueueDropsForASubscriberThatDoesNotRead: an integration that
// subscribes to telemetry and then stops reading its socket fills its write
// queue (mqtt.write_queue); further deliveries to it are dropped and
// counted, and the publishing device is not held up.
func TestWriteQueueDropsForASubscriberThatDoesNotRead(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.WriteQueue, c.MessageRate = 16, 0 })
	require.Equal(t, int32(16), f.b.srv.Options.Capabilities.MaximumClientWritesPending)
	secret := f.integration(t, "stuck", nil, []string{"devices/+/telemetry"})
	conn, err := net.Dial("tcp", f.b.Addr())
	require.NoError(t, err)
	defer conn.Close()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	packet := func(typ byte, body []byte) []byte {
		require.Less(t, len(body), 128)
		return append([]byte{typ, byte(len(body))}, body...)
	}
	connect := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60}, str("stuck-c")...)
	connect = append(append(connect, str("stuck")...), str(secret)...)
	_, err = conn.Write(packet(0x10, connect))
	require.NoError(t, err)
	_, err = conn.Write(packet(0x82, append(append([]byte{0, 1}, str("devices/+/telemetry")...), 0)))
	require.NoError(t, err)
	ack := make([]byte, 4+5)
	_, err = io.ReadFull(conn, ack)
	require.NoError(t, err)
	require.Equal(t, []byte{0x20, 2, 0, 0}, ack[:4], "CONNACK accepted")
	require.Equal(t, []byte{0x90, 3, 0, 1, 0}, ack[4:], "SUBACK QoS 0")
	// From here on the integration reads nothing.

	tok := f.device(t, "chatty")
	c, err := f.dial(t, "", "chatty", tok, nil)
	require.NoError(t, err)
	payload := fmt.Sprintf(`{"note":%q}`, strings.Repeat("x", 4000))
	sent := 0
	testenv.Eventually(t, 30*time.Second, "deliveries to the stuck subscriber dropped", func() bool {
		for range 200 {
			require.True(t, c.Publish("devices/chatty/telemetry", 0, false, payload).WaitTimeout(5*time.Second))
			sent++
		}
		return f.metric(t, "telehub_mqtt_messages_dropped_total") > 0
	})
	testenv.Eventually(t, 10*time.Second, "every publish of the device ingested", func() bool {
		return len(f.ingested.of("chatty")) == sent
	})
}
