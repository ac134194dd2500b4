package broker

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestSubscriptionQuota: a client holds at most
// mqtt.max_subscriptions_per_client subscriptions. A new filter over it
// gets SUBACK failure (MQTT 3.1.1: 0x80; MQTT 5: 0x97 quota exceeded);
// subscribing again to a filter it holds costs nothing, and unsubscribing
// frees a place.
func TestSubscriptionQuota(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSubscriptionsPerClient = 3 })
	tok := f.device(t, "subs")
	c, err := f.dial(t, "", "subs", tok, nil)
	require.NoError(t, err)
	for _, filter := range []string{"devices/subs/a", "devices/subs/b", "devices/subs/c"} {
		require.Equal(t, byte(1), c.subscribe(t, filter, 1))
	}
	require.Equal(t, byte(0x80), c.subscribe(t, "devices/subs/d", 1), "over the quota")
	require.Equal(t, byte(0), c.subscribe(t, "devices/subs/a", 0), "a filter it holds")
	require.True(t, c.Unsubscribe("devices/subs/b").WaitTimeout(5*time.Second))
	require.Equal(t, byte(1), c.subscribe(t, "devices/subs/d", 1), "in b's place")
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="subscriptions"}`))
	cl, ok := f.b.srv.Clients.Get("subs-c")
	require.True(t, ok)
	require.Equal(t, 3, cl.State.Subscriptions.Len())

	// MQTT 5, four filters in one SUBSCRIBE: the fourth gets 0x97 (151).
	// mosquitto_sub prints its debug lines when it exits (-C 1: after one
	// message; -W: a safety net should none come).
	host, port := hostPort(t, f.b.Addr())
	cmd := exec.Command(testenv.Tool(t, "mosquitto_sub"), "-V", "5", "-d", "-C", "1", "-W", "20", "-h", host, "-p", port,
		"-u", "subs", "-P", tok, "-i", "subs-5",
		"-t", "devices/subs/1", "-t", "devices/subs/2", "-t", "devices/subs/3", "-t", "devices/subs/4")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	waitSubscribed(t, f, "subs-5")
	require.NoError(t, f.b.srv.Publish("devices/subs/1", []byte("m"), false, 0)) // the same device on another connection would take over
	require.NoError(t, cmd.Wait(), "%s", out.String())
	require.Contains(t, out.String(), "Subscribed (mid: 1): 0, 0, 0, 151")
}

// TestSubscribeRate: SUBSCRIBE packets over the client's subscribe rate
// are refused, every filter with failure, and counted.
func TestSubscribeRate(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SubscribeRate, c.SubscribeBurst = 0.001, 2 })
	tok := f.device(t, "sr")
	c, err := f.dial(t, "", "sr", tok, nil)
	require.NoError(t, err)
	require.Equal(t, byte(1), c.subscribe(t, "devices/sr/a", 1))
	require.Equal(t, byte(1), c.subscribe(t, "devices/sr/b", 1))
	require.Equal(t, byte(0x80), c.subscribe(t, "devices/sr/c", 1), "over the rate")
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="subscribe_rate"}`))
	cl, ok := f.b.srv.Clients.Get("sr-c")
	require.True(t, ok)
	require.Equal(t, 2, cl.State.Subscriptions.Len())
}
