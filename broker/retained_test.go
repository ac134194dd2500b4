package broker

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// retainedTopics returns the topics mochi holds retained messages for,
// its own $SYS ones left out.
func (f *fixture) retainedTopics() []string {
	var out []string
	for tp := range f.b.srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(tp, "$SYS/") {
			out = append(out, tp)
		}
	}
	return out
}

// TestRetainedQuotaPerClient: a device holds at most
// mqtt.max_retained_per_client retained messages; over it, MQTT 3.1.1
// publishes are acknowledged and dropped, MQTT 5 ones get PUBACK "quota
// exceeded". Replacing or clearing its own messages is always allowed, the
// hub's own retained desired state does not count, and deleting the device
// clears its retained messages and their accounting.
func TestRetainedQuotaPerClient(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxRetainedPerClient = 3 })
	tok := f.device(t, "keeper")
	for i := range 5 { // the hub's desired state, through the inline client
		require.NoError(t, f.b.srv.Publish("devices/keeper/state/desired"+strconv.Itoa(i), []byte(`{"on":true}`), true, 1))
	}
	dev, err := f.dial(t, "", "keeper", tok, nil)
	require.NoError(t, err)
	for i := range 5 {
		dev.publish(t, "devices/keeper/r"+strconv.Itoa(i), 1, true, "v")
	}
	testenv.Eventually(t, 5*time.Second, "refusals counted", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="retained_per_client"}`) == 2
	})
	held := f.retainedTopics()
	require.Len(t, held, 8, "5 of the hub, 3 of the device: %v", held)
	require.Equal(t, 3, f.b.retained.held("device:keeper").count)
	require.Equal(t, 3.0, f.metric(t, "telehub_mqtt_retained_messages"), "the hub's own are not counted")
	require.NotContains(t, held, "devices/keeper/r3")
	require.NotContains(t, held, "devices/keeper/r4")

	dev.publish(t, "devices/keeper/r0", 1, true, "replaced") // a replacement costs no slot
	dev.publish(t, "devices/keeper/r1", 1, true, "")         // clearing frees one
	dev.publish(t, "devices/keeper/r3", 1, true, "v")
	testenv.Eventually(t, 5*time.Second, "r3 retained in r1's place", func() bool {
		_, ok := f.b.srv.Topics.Retained.Get("devices/keeper/r3")
		return ok
	})
	pk, _ := f.b.srv.Topics.Retained.Get("devices/keeper/r0")
	require.Equal(t, "replaced", string(pk.Payload))

	// MQTT 5: PUBACK 0x97.
	host, port := hostPort(t, f.b.Addr())
	out := runTool(t, "mosquitto_pub", "-V", "5", "-h", host, "-p", port, "-u", "keeper", "-P", tok, "-i", "keeper-5",
		"-q", "1", "-r", "-t", "devices/keeper/r9", "-m", "v")
	require.Contains(t, strings.ToLower(out), "quota exceeded")
	_, ok := f.b.srv.Topics.Retained.Get("devices/keeper/r9")
	require.False(t, ok)

	require.NoError(t, f.reg.Delete("keeper"))
	testenv.Eventually(t, 5*time.Second, "the deleted device's retained messages are gone", func() bool {
		return len(f.retainedTopics()) == 5
	})
	for _, tp := range f.retainedTopics() {
		require.True(t, strings.HasPrefix(tp, "devices/keeper/state/desired"), "only the hub's are left: %s", tp)
	}
	require.Zero(t, f.b.retained.held("device:keeper"))
	require.Zero(t, f.metric(t, "telehub_mqtt_retained_bytes"))
	tok = f.device(t, "keeper")
	again, err := f.dial(t, "", "keeper", tok, nil)
	require.NoError(t, err)
	for i := range 3 {
		again.publish(t, "devices/keeper/n"+strconv.Itoa(i), 1, true, "v")
	}
	require.Len(t, f.retainedTopics(), 8, "a new device of the same ID starts with the whole quota")
}

// TestRetainedBytesQuota: the per-client byte quota and the total bound
// over all clients.
func TestRetainedBytesQuota(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.MaxRetainedBytesPerClient = 2048
		c.MaxRetained = 3
	})
	tok := f.device(t, "fat")
	dev, err := f.dial(t, "", "fat", tok, nil)
	require.NoError(t, err)
	big := strings.Repeat("x", 1000)
	for i := range 3 {
		dev.publish(t, "devices/fat/b"+strconv.Itoa(i), 1, true, big)
	}
	testenv.Eventually(t, 5*time.Second, "the third is over 2048 bytes", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="retained_bytes_per_client"}`) == 1
	})
	require.Len(t, f.retainedTopics(), 2)

	tok2 := f.device(t, "slim")
	dev2, err := f.dial(t, "", "slim", tok2, nil)
	require.NoError(t, err)
	dev2.publish(t, "devices/slim/a", 1, true, "v")
	dev2.publish(t, "devices/slim/b", 1, true, "v")
	testenv.Eventually(t, 5*time.Second, "the fourth retained message is over the total", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="retained_total"}`) == 1
	})
	require.Len(t, f.retainedTopics(), 3)
}
