package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/telehub/telehub/internal/testenv"
)

func TestAnonymousACLConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []ACLRule
		err   string
	}{
		{"none", nil, ""},
		{"good", []ACLRule{{"deny", "publish", "site/locked/#"}, {"allow", "both", "$site/+/x"}, {"deny", "subscribe", "#"}}, ""},
		{"action", []ACLRule{{"permit", "publish", "a"}}, `mqtt.anonymous_acl[0]: action "permit"`},
		{"access", []ACLRule{{"deny", "read", "a"}}, `access "read"`},
		{"empty topic", []ACLRule{{"deny", "both", ""}}, "not a valid MQTT topic filter"},
		{"bad filter", []ACLRule{{"allow", "both", "a"}, {"deny", "both", "a/#/b"}}, `mqtt.anonymous_acl[1]: topic "a/#/b"`},
		{"shared", []ACLRule{{"deny", "subscribe", "$share/g/a"}}, "without $share"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.AnonymousACL = tc.rules
			err := c.Validate()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
	c := DefaultConfig()
	c.ReceiveMaximum = 0
	require.ErrorContains(t, c.Validate(), "mqtt.receive_maximum")
	for _, ka := range []time.Duration{-time.Second, 1500 * time.Millisecond, 65536 * time.Second} {
		c := DefaultConfig()
		c.ServerKeepAlive = ka
		require.ErrorContains(t, c.Validate(), "mqtt.server_keep_alive", ka)
	}
}

// TestMQTT5ConfigYAML: the new keys read from YAML as the README shows them.
func TestMQTT5ConfigYAML(t *testing.T) {
	in := `
receive_maximum: 64
server_keep_alive: 60s
anonymous_acl:
  - {action: deny, access: publish, topic: "site/locked/#"}
  - {action: allow, access: both, topic: "$site/#"}
`
	c := DefaultConfig()
	d := yaml.NewDecoder(strings.NewReader(in))
	d.KnownFields(true)
	require.NoError(t, d.Decode(&c))
	require.NoError(t, c.Validate())
	require.Equal(t, uint16(64), c.ReceiveMaximum)
	require.Equal(t, time.Minute, c.ServerKeepAlive)
	require.Equal(t, []ACLRule{{ACLDeny, ACLPublish, "site/locked/#"}, {ACLAllow, ACLBoth, "$site/#"}}, c.AnonymousACL)
}

// subscribeRaw subscribes at QoS 0 and returns the SUBACK's codes.
func (c *rawClient) subscribe(id uint16, filters ...string) []byte {
	c.t.Helper()
	var subs packets.Subscriptions
	for _, f := range filters {
		subs = append(subs, packets.Subscription{Filter: f})
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id, Filters: subs})
	return c.expect(packets.Suback).ReasonCodes
}

// nextTopic returns the topic of the next message delivered.
func (c *rawClient) nextTopic() string {
	c.t.Helper()
	return c.expect(packets.Publish).TopicName
}

// TestAnonymousSiteACL: mqtt.anonymous_acl closes topics to anonymous
// clients, for publish, subscribe or both, first match wins; a refused
// subscription gets 0x87 (MQTT 3.1.1: 0x80), a refused publish 0x87 (MQTT
// 3.1.1: the connection closes), and a message on a topic closed to
// subscribers is not delivered through a wider filter either.
func TestAnonymousSiteACL(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.AllowAnonymous = true
		c.AnonymousACL = []ACLRule{
			{ACLDeny, ACLPublish, "site/locked/#"},
			{ACLAllow, ACLSubscribe, "site/secret/open"},
			{ACLDeny, ACLSubscribe, "site/secret/#"},
			{ACLDeny, ACLBoth, "$private/#"},
		}
	})
	sub, _ := connectRaw(t, f.b.Addr(), 5, clientID("acl-sub"))
	require.Equal(t, []byte{0x87, 0x00, 0x00, 0x87, 0x00, 0x87, 0x87, 0x87},
		sub.subscribe(1, "site/secret/#", "site/secret/open", "site/#", "$private/#", "$site/#", "devices/#", "$SYS/#", "$share/g/site/secret/x"))

	pub, _ := connectRaw(t, f.b.Addr(), 5, clientID("acl-pub"))
	for _, tc := range []struct {
		topic string
		want  packets.Code
	}{
		{"site/locked/door", packets.ErrNotAuthorized},
		{"site/secret/x", packets.CodeSuccess}, // closed to subscribers only
		{"site/secret/open", packets.CodeSuccess},
		{"$private/x", packets.ErrNotAuthorized},
		{"$site/x", packets.CodeSuccess},
		{"devices/d/telemetry", packets.ErrNotAuthorized},
		{"site/open", packets.CodeSuccess},
	} {
		pub.publish(tc.topic, 1, 1, "m", packets.Properties{})
		require.Equal(t, tc.want.Code, pub.expect(packets.Puback).ReasonCode, tc.topic)
	}
	require.Equal(t, 3.0, f.metric(t, `telehub_mqtt_acl_denied_total{action="publish"}`))
	// site/# and $site/# receive the open topics, in order, and not site/secret/x.
	require.Equal(t, "site/secret/open", sub.nextTopic())
	require.Equal(t, "$site/x", sub.nextTopic())
	require.Equal(t, "site/open", sub.nextTopic())

	// MQTT 3.1.1.
	v3, err := f.dial(t, "acl-v3", "", "", nil)
	require.NoError(t, err)
	require.Equal(t, byte(0x80), v3.subscribe(t, "site/secret/#", 0))
	require.Equal(t, byte(0), v3.subscribe(t, "$site/#", 0))
	v3.publish(t, "$site/v3", 1, false, "ok")
	tok := v3.Publish("site/locked/door", 1, false, "open")
	tok.WaitTimeout(5 * time.Second)
	testenv.Eventually(t, 5*time.Second, "3.1.1 client disconnected", v3.isLost)
}

// TestDollarTopics: a topic starting with '$' is never matched by a filter
// starting with a wildcard [MQTT-4.7.2-1], be it a plain or a shared
// subscription, a live or a retained message; a filter naming the '$'
// level receives it. Site clients may use such topics (not $SYS).
func TestDollarTopics(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	wild, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-wild"))
	require.Equal(t, []byte{0, 0}, wild.subscribe(1, "#", "+/x"))
	named, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-named"))
	require.Equal(t, []byte{0}, named.subscribe(1, "$site/#"))
	shared, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-shared"))
	require.Equal(t, []byte{0, 0}, shared.subscribe(1, "$share/g/#", "$share/g3/+/x"))
	sharedNamed, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-shared-named"))
	require.Equal(t, []byte{0}, sharedNamed.subscribe(1, "$share/g2/$site/+"))

	pub, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-pub"))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: "$site/x",
		PacketID: 1, Payload: []byte("r")}
	pub.send(pk)
	require.Equal(t, packets.CodeSuccess.Code, pub.expect(packets.Puback).ReasonCode)
	pub.publish("site/marker", 1, 2, "m", packets.Properties{})
	pub.expect(packets.Puback)

	require.Equal(t, "site/marker", wild.nextTopic(), "# and +/x do not match $site/x")
	require.Equal(t, "$site/x", named.nextTopic())
	require.Equal(t, "site/marker", shared.nextTopic(), "$share/g/# does not match $site/x")
	require.Equal(t, "$site/x", sharedNamed.nextTopic())

	// Retained: a new # subscription does not get $site/x; $site/# does.
	late, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-late"))
	require.Equal(t, []byte{0, 0}, late.subscribe(1, "#", "+/x"))
	pub.publish("site/marker2", 1, 3, "m", packets.Properties{})
	pub.expect(packets.Puback)
	require.Equal(t, "site/marker2", late.nextTopic(), "no retained $site/x through # or +/x")
	lateNamed, _ := connectRaw(t, f.b.Addr(), 5, clientID("d-late-named"))
	require.Equal(t, []byte{0}, lateNamed.subscribe(1, "$site/+"))
	got := lateNamed.expect(packets.Publish)
	require.Equal(t, "$site/x", got.TopicName)
	require.True(t, got.FixedHeader.Retain)
	// The wildcard subscriber takes a named one too: now it gets it.
	require.Equal(t, []byte{0}, late.subscribe(2, "$site/x"))
	require.Equal(t, "$site/x", late.nextTopic())
}
