package broker

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// TestTopicAliasMaximum: the CONNACK announces mqtt.topic_alias_maximum
// (default 16) and an alias over it ends the connection with "topic alias
// invalid", so one client holds at most 16 aliases; aliases up to the
// maximum work.
func TestTopicAliasMaximum(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "al")

	c, ack := dialRaw5(t, f.b.Addr(), "al-1", "al", tok)
	require.Equal(t, byte(0), ack.ReasonCode)
	require.Equal(t, uint16(16), ack.Properties.TopicAliasMaximum, "CONNACK announces the maximum")
	c.publish(t, "devices/al/telemetry", 16, 1, 1, []byte(`{"v":1}`))
	c.publish(t, "", 16, 1, 2, []byte(`{"v":2}`))
	for range 2 {
		pk, err := c.read(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, byte(0), pk.ReasonCode)
	}
	require.Equal(t, []string{`{"v":1}`, `{"v":2}`}, f.ingested.of("al"))

	c2, _ := dialRaw5(t, f.b.Addr(), "al-2", "al", tok)
	c2.publish(t, "devices/al/telemetry", 17, 1, 1, []byte(`{"v":3}`))
	require.Equal(t, packets.ErrTopicAliasInvalid.Code, c2.closed(t))
	require.Len(t, f.ingested.of("al"), 2, "nothing over the maximum is ingested")
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_alias"}`))

	// mosquitto_pub -V 5 with an alias over the maximum is cut off too.
	host, port := hostPort(t, f.b.Addr())
	out := runTool(t, "mosquitto_pub", "-V", "5", "-h", host, "-p", port, "-u", "al", "-P", tok, "-q", "1",
		"-t", "devices/al/telemetry", "-D", "publish", "topic-alias", "1000", "-m", `{"v":4}`)
	require.Len(t, f.ingested.of("al"), 2, "%s", out)
	testenv.Eventually(t, 5*time.Second, "counted", func() bool {
		return f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_alias"}`) == 2
	})
}

// TestOversizedTopicAliasNotStored: a publish whose topic is over
// mqtt.max_topic_bytes is refused before mochi stores its alias, so the
// alias stays unbound: the next publish with only that alias is a
// protocol error (the connection ends with "topic alias invalid"), not a
// second copy of the long topic.
func TestOversizedTopicAliasNotStored(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.device(t, "big")
	long := "devices/big/" + strings.Repeat("x", 60_000)

	c, _ := dialRaw5(t, f.b.Addr(), "big-1", "big", tok)
	c.publish(t, long, 1, 1, 1, []byte(`{"v":1}`))
	pk, err := c.read(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, packets.ErrTopicNameInvalid.Code, pk.ReasonCode)
	c.publish(t, "", 1, 1, 2, []byte(`{"v":2}`))
	require.Equal(t, packets.ErrTopicAliasInvalid.Code, c.closed(t), "the alias was never bound to the long topic")
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_bytes"}`))
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="topic_alias"}`))
	require.Empty(t, f.ingested.of("big"))
}

// TestRefusedPublishesSpendTheMessageRate: publishes refused for their
// topic (too long, or not the device's) cost the sender's message rate like
// accepted ones, so a flood of refused publishes is limited too.
func TestRefusedPublishesSpendTheMessageRate(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MessageRate, c.MessageBurst = 0.001, 4 })
	tok := f.device(t, "r")
	f.device(t, "other")
	c, _ := dialRaw5(t, f.b.Addr(), "r-1", "r", tok)
	for i, step := range []struct {
		topic string
		alias uint16
		want  packets.Code
	}{
		{"devices/r/" + strings.Repeat("x", 5000), 1, packets.ErrTopicNameInvalid},
		{"devices/other/telemetry", 0, packets.ErrNotAuthorized},
		{"devices/r/telemetry", 0, packets.CodeSuccess},
		{"devices/r/telemetry", 0, packets.CodeSuccess},
		{"devices/r/telemetry", 0, packets.ErrMessageRateTooHigh}, // the burst of 4 is spent
	} {
		c.publish(t, step.topic, step.alias, 1, uint16(i+1), []byte(`{"v":1}`))
		pk, err := c.read(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, step.want.Code, pk.ReasonCode, "publish %d", i)
	}
	require.Len(t, f.ingested.of("r"), 2)
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="message_rate"}`))
}

// runTool runs a command-line client and returns its output.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, _ := exec.Command(testenv.Tool(t, name), args...).CombinedOutput()
	return string(out)
}
