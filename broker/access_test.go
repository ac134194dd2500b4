package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestDeviceACLMatrix: a device publishes and subscribes with a real MQTT
// 3.1.1 client to every kind of topic outside devices/{its id}/ that could
// slip through: other devices, wildcards, $SYS, shared subscriptions and
// topic tricks. An observer subscribed to everything proves what got through:
// after each attempt the device publishes a marker on its own topic, and
// messages from one client arrive in order, so once the marker is in, the
// attempt would have been too.
func TestDeviceACLMatrix(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "d1")
	tok2 := f.device(t, "d2")
	f.device(t, "d10")
	observer, err := f.dial(t, "", "observer", f.integration(t, "observer", nil, []string{"#", "$SYS/#"}), nil)
	require.NoError(t, err)
	require.Equal(t, byte(0), observer.subscribe(t, "#", 0))

	deep := "devices/d1" + strings.Repeat("/x", 20)
	long := "devices/d1/" + strings.Repeat("y", 2000)
	t.Run("publish", func(t *testing.T) {
		for i, tc := range []struct {
			name, topic string
			delivered   bool
			closes      bool // the packet is malformed: the connection ends
		}{
			{"own telemetry", "devices/d1/telemetry", true, false},
			{"own deeper topic", "devices/d1/a/b", true, false},
			{"own empty level", "devices/d1//x", true, false},
			{"dots are not a path", "devices/d1/../d2/telemetry", true, false},
			{"other device", "devices/d2/telemetry", false, false},
			{"device ID prefix", "devices/d10/telemetry", false, false},
			{"other case", "Devices/d1/telemetry", false, false},
			{"device root", "devices/d1", false, false},
			{"trailing slash", "devices/d1/", false, false},
			{"empty ID level", "devices//d1/telemetry", false, false},
			{"leading slash", "/devices/d1/telemetry", false, false},
			{"outside devices", "site/lights", false, false},
			{"$SYS", "$SYS/broker/clients/connected", false, false},
			{"shared prefix", "$share/g/devices/d1/telemetry", false, false},
			{"too many levels", deep, false, false},
			{"too long", long, false, false},
			{"wildcard +", "devices/d1/+", false, true},
			{"wildcard #", "devices/d1/#", false, true},
			{"not UTF-8", "devices/d1/\xff\xfe", false, true},
			{"NUL", "devices/d1/a\x00b", false, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, err := f.dial(t, fmt.Sprintf("d1-pub-%d", i), "d1", tok, nil)
				require.NoError(t, err)
				c.Publish(tc.topic, 0, false, "attempt").WaitTimeout(5 * time.Second)
				if tc.closes {
					testenv.Eventually(t, 5*time.Second, "malformed publish closes the connection", c.isLost)
					c, err = f.dial(t, fmt.Sprintf("d1-pub-%d-again", i), "d1", tok, nil)
					require.NoError(t, err)
				}
				marker := fmt.Sprintf("devices/d1/marker/%d", i)
				c.publish(t, marker, 0, false, "marker")
				testenv.Eventually(t, 5*time.Second, "marker delivered", func() bool { return observer.received(marker) })
				require.Equal(t, tc.delivered, observer.received(tc.topic))
			})
		}
	})
	require.Empty(t, f.ingested.of("d2"), "nothing reached the pipeline as d2's telemetry")
	// Every refusal above but $SYS, which mochi refuses before the ACL.
	require.Equal(t, 9.0, f.metric(t, `telehub_mqtt_acl_denied_total{action="publish"}`))
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_levels"}`))
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_bytes"}`))

	t.Run("subscribe", func(t *testing.T) {
		c, err := f.dial(t, "d1-sub", "d1", tok, nil)
		require.NoError(t, err)
		for _, tc := range []struct {
			filter  string
			granted bool
		}{
			{"devices/d1/commands/+", true},
			{"devices/d1/#", true},
			{"devices/d1/+/x", true},
			{"devices/d2/#", false},
			{"devices/d10/#", false},
			{"devices/+/telemetry", false},
			{"devices/+/#", false},
			{"devices/#", false},
			{"#", false},
			{"+/d1/telemetry", false},
			{"+/+/telemetry", false},
			{"$SYS/#", false},
			{"$SYS/broker/clients/connected", false},
			{"$share/g/devices/d2/telemetry", false},
			{"$share/g/#", false},
			{"$share/g/devices/d1/telemetry", false},
			{"devices//telemetry", false},
			{"devices/d1", false},
			{"Devices/d1/#", false},
			{deep, false},
			{long, false},
		} {
			t.Run(tc.filter[:min(len(tc.filter), 40)], func(t *testing.T) {
				code := c.subscribe(t, tc.filter, 1)
				if tc.granted {
					require.Equal(t, byte(1), code)
				} else {
					require.Equal(t, byte(0x80), code, "MQTT 3.1.1 failure")
				}
			})
		}
		// With its own subscriptions granted and the others refused, the
		// device receives its own messages and never another device's.
		d2, err := f.dial(t, "", "d2", tok2, nil)
		require.NoError(t, err)
		d2.publish(t, "devices/d2/telemetry", 1, false, "other")
		c.publish(t, "devices/d1/commands/x", 1, false, "own")
		testenv.Eventually(t, 5*time.Second, "own message", func() bool { return c.received("devices/d1/commands/x") })
		for _, tp := range c.topics() {
			require.True(t, strings.HasPrefix(tp, "devices/d1/"), "d1 received %q", tp)
		}
	})
	require.GreaterOrEqual(t, f.metric(t, `telehub_mqtt_acl_denied_total{action="subscribe"}`), 15.0)

	t.Run("QoS 1 to another device closes an MQTT 3.1.1 connection", func(t *testing.T) {
		c, err := f.dial(t, "d1-qos1", "d1", tok, nil)
		require.NoError(t, err)
		c.Publish("devices/d2/telemetry", 1, false, "x")
		testenv.Eventually(t, 5*time.Second, "connection closed", c.isLost)
	})
}

// TestConnectClassification: who may connect, and as what.
func TestConnectClassification(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = false })
	tok := f.device(t, "dev")
	secret := f.integration(t, "ha", []string{"site/#"}, []string{"devices/+/telemetry"})
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"device", "dev", tok, true},
		{"integration", "ha", secret, true},
		{"device with the integration's secret", "dev", secret, false},
		{"integration with the device's token", "ha", tok, false},
		{"unknown user", "ghost", tok, false},
		{"empty password", "dev", "", false},
		{"anonymous, not allowed", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.dial(t, "cc-"+strings.ReplaceAll(tc.name, " ", "-"), tc.user, tc.pass, nil)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
	require.Equal(t, 5.0, f.metric(t, "telehub_mqtt_auth_failures_total"))
	// Counted once the session is established, just after the CONNACK; the
	// subtests' clients have disconnected since.
	testenv.Eventually(t, 5*time.Second, "connects counted, connections closed", func() bool {
		return f.metric(t, "telehub_mqtt_connects_total") == 2 &&
			f.metric(t, `telehub_mqtt_connections{kind="device"}`) == 0 &&
			f.metric(t, `telehub_mqtt_connections{kind="integration"}`) == 0
	})
	c, err := f.dial(t, "", "dev", tok, nil)
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "one device connected", func() bool {
		return f.metric(t, `telehub_mqtt_connections{kind="device"}`) == 1
	})
	c.Disconnect(50)
	testenv.Eventually(t, 5*time.Second, "none connected", func() bool {
		return f.metric(t, `telehub_mqtt_connections{kind="device"}`) == 0
	})
}

// TestIntegrationACL: an integration may subscribe to devices/+/telemetry
// when its ACL says so, receives every device's telemetry, and may do no
// more; deleting it disconnects it at once.
func TestIntegrationACL(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "t1")
	secret := f.integration(t, "historian", []string{"site/+/set"}, []string{"devices/+/telemetry", "site/#"})
	in, err := f.dial(t, "", "historian", secret, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		filter  string
		granted bool
	}{
		{"devices/+/telemetry", true},
		{"devices/t1/telemetry", true},
		{"$share/hist/devices/+/telemetry", true},
		{"site/kitchen/temp", true},
		{"devices/+/commands/#", false},
		{"devices/#", false},
		{"#", false},
		{"$SYS/#", false},
		{"$share/hist/#", false},
	} {
		t.Run("subscribe "+tc.filter, func(t *testing.T) {
			code := in.subscribe(t, tc.filter, 0)
			require.Equal(t, map[bool]byte{true: 0, false: 0x80}[tc.granted], code)
		})
	}
	dev, err := f.dial(t, "", "t1", tok, nil)
	require.NoError(t, err)
	dev.publish(t, "devices/t1/telemetry", 1, false, `{"temperature":20}`)
	testenv.Eventually(t, 5*time.Second, "telemetry reaches the integration", func() bool { return in.received("devices/t1/telemetry") })
	require.Equal(t, []string{`{"temperature":20}`}, f.ingested.of("t1"))

	watch, err := f.dial(t, "", "watch", f.integration(t, "watch", nil, []string{"#"}), nil)
	require.NoError(t, err)
	require.Equal(t, byte(0), watch.subscribe(t, "#", 0))
	require.NoError(t, in.Publish("devices/t1/commands/c1", 0, false, "{}").Error())
	in.publish(t, "site/kitchen/set", 0, false, "on")
	testenv.Eventually(t, 5*time.Second, "allowed publish delivered", func() bool { return watch.received("site/kitchen/set") })
	require.False(t, watch.received("devices/t1/commands/c1"), "publish outside the ACL dropped")
	require.Empty(t, f.ingested.of("historian"))

	require.NoError(t, f.ints.Delete("historian"))
	testenv.Eventually(t, 5*time.Second, "deleted integration disconnected", in.isLost)
	_, err = f.dial(t, "", "historian", secret, nil)
	require.Error(t, err, "its secret no longer works")
}

// TestAnonymousClients: anonymous clients share the broker but never see or
// touch devices/ or $SYS.
func TestAnonymousClients(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	tok := f.device(t, "a1")
	anon, err := f.dial(t, "anon-1", "", "", nil)
	require.NoError(t, err)
	require.Equal(t, byte(0), anon.subscribe(t, "#", 0), "everything outside devices/ is open")
	require.Equal(t, byte(0x80), anon.subscribe(t, "devices/#", 0))
	require.Equal(t, byte(0x80), anon.subscribe(t, "devices/a1/telemetry", 0))
	require.Equal(t, byte(0x80), anon.subscribe(t, "$SYS/#", 0))
	require.Equal(t, byte(0x80), anon.subscribe(t, "$share/g/devices/+/telemetry", 0))

	dev, err := f.dial(t, "", "a1", tok, nil)
	require.NoError(t, err)
	dev.publish(t, "devices/a1/telemetry", 1, false, `{"t":1}`)
	require.NoError(t, anon.Publish("devices/a1/commands/x", 0, false, "spoof").Error())
	anon.publish(t, "site/hall/light", 1, false, "on")
	testenv.Eventually(t, 5*time.Second, "site message delivered", func() bool { return anon.received("site/hall/light") })
	for _, tp := range anon.topics() {
		require.False(t, strings.HasPrefix(tp, "devices/"), "anonymous client received %q through #", tp)
	}
	require.Equal(t, []string{`{"t":1}`}, f.ingested.of("a1"))

	// A user name without a known secret is not anonymous.
	_, err = f.dial(t, "anon-2", "someone", "guess", nil)
	require.Error(t, err)
	// An anonymous client cannot take over a device's session by its client ID.
	_, err = f.dial(t, "a1-c", "", "", nil)
	require.Error(t, err)
	require.False(t, dev.isLost(), "the device kept its connection")
}

// TestWillIsCheckedAtConnect: a will is a publish, so it must pass the ACL;
// a device whose will names another device's topic is refused.
func TestWillIsCheckedAtConnect(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "w1")
	f.device(t, "w2")
	_, err := f.dial(t, "", "w1", tok, func(o *paho.ClientOptions) { o.SetWill("devices/w2/state", "gone", 1, true) })
	require.Error(t, err)
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_acl_denied_total{action="will"}`))
	_, err = f.dial(t, "", "w1", tok, func(o *paho.ClientOptions) { o.SetWill("devices/w1/state", `{"online":false}`, 1, true) })
	require.NoError(t, err)
}
