package broker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// asDevice fills a CONNECT with a device's credentials.
func asDevice(id, token string) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.ClientIdentifier = id + "-raw"
		pk.Connect.Username, pk.Connect.Password = []byte(id), []byte(token)
	}
}

// clientID sets the client ID of an anonymous CONNECT.
func clientID(id string) func(*packets.Packet) {
	return func(pk *packets.Packet) { pk.Connect.ClientIdentifier = id }
}

// richProperties are publish properties that no acknowledgement may echo.
var richProperties = packets.Properties{
	User:                  []packets.UserProperty{{Key: "trace", Val: "abc"}},
	ContentType:           "application/json",
	ResponseTopic:         "site/replies",
	CorrelationData:       []byte("corr"),
	MessageExpiryInterval: 300,
	PayloadFormat:         1,
	PayloadFormatFlag:     true,
}

// TestAcknowledgementsCarryOnlyTheirReason: PUBACK, PUBREC and PUBCOMP
// never echo the properties of the PUBLISH or PUBREL they answer (mochi
// copied them, which strict MQTT 5 clients refuse); a refusal carries its
// reason code and reason string and nothing else.
func TestAcknowledgementsCarryOnlyTheirReason(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	tok := f.device(t, "ack")
	dev, _ := connectRaw(t, f.b.Addr(), 5, asDevice("ack", tok))

	dev.publish("devices/ack/telemetry", 1, 1, `{"t":1}`, richProperties) // held for the log, then acknowledged
	ack := dev.expect(packets.Puback)
	require.Equal(t, uint16(1), ack.PacketID)
	require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode)
	require.Equal(t, packets.Properties{}, ack.Properties)

	dev.publish("devices/ack/status", 2, 2, "on", richProperties)
	rec := dev.expect(packets.Pubrec)
	require.Equal(t, packets.CodeSuccess.Code, rec.ReasonCode)
	require.Equal(t, packets.Properties{}, rec.Properties)
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 2,
		Properties: packets.Properties{User: []packets.UserProperty{{Key: "rel", Val: "x"}}, ReasonString: "mine"}})
	comp := dev.expect(packets.Pubcomp)
	require.Equal(t, uint16(2), comp.PacketID)
	require.Equal(t, packets.Properties{}, comp.Properties)

	dev.publish("devices/other/telemetry", 1, 3, `{"t":1}`, richProperties) // the ACL refuses it
	ack = dev.expect(packets.Puback)
	require.Equal(t, packets.ErrNotAuthorized.Code, ack.ReasonCode)
	require.Equal(t, packets.Properties{ReasonString: packets.ErrNotAuthorized.Reason}, ack.Properties)

	// An anonymous publish that subscribers receive keeps its properties
	// on the way out; only the acknowledgement is bare.
	sub, _ := connectRaw(t, f.b.Addr(), 5, clientID("props-sub"))
	sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "site/#", Qos: 1}}, Properties: packets.Properties{User: richProperties.User}})
	suback := sub.expect(packets.Suback)
	require.Equal(t, []byte{1}, suback.ReasonCodes)
	require.Empty(t, suback.Properties.User, "SUBACK does not echo the SUBSCRIBE's user properties")
	pub, _ := connectRaw(t, f.b.Addr(), 5, clientID("props-pub"))
	pub.publish("site/a", 1, 7, "x", richProperties)
	ack = pub.expect(packets.Puback)
	require.Equal(t, packets.Properties{}, ack.Properties)
	got := sub.expect(packets.Publish)
	require.Equal(t, richProperties.User, got.Properties.User)
	require.Equal(t, "application/json", got.Properties.ContentType)
}

// TestRefusalsAnswerWithTheAckOfTheirQoS: every way the hub refuses an
// MQTT 5 publish answers QoS 1 with a PUBACK and QoS 2 with a PUBREC
// carrying the reason (mochi answered a hook's refusal of a QoS 2 publish
// with a PUBACK, and a publish to $SYS with nothing).
func TestRefusalsAnswerWithTheAckOfTheirQoS(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true; c.MessageRate = 0.001; c.MessageBurst = 2 })
	tok := f.device(t, "rf")
	f.ingested.refuse = func(payload string) error {
		switch payload {
		case "not json":
			return &ingest.DecodeError{Reason: "not JSON"}
		case "full":
			return ingest.ErrBackpressure
		}
		return nil
	}
	for _, tc := range []struct {
		name, topic, payload string
		want                 packets.Code
	}{
		{"bad payload", "devices/rf/telemetry", "not json", packets.ErrPayloadFormatInvalid},
		{"log full", "devices/rf/telemetry", "full", packets.ErrQuotaExceeded},
		{"acl", "devices/other/telemetry", "{}", packets.ErrNotAuthorized},
		{"$SYS", "$SYS/broker/x", "{}", packets.ErrNotAuthorized},
		{"$sysx", "$sysx", "{}", packets.ErrNotAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for qos, typ := range map[byte]byte{1: packets.Puback, 2: packets.Pubrec} {
				c, _ := connectRaw(t, f.b.Addr(), 5, asDevice("rf", tok))
				c.publish(tc.topic, qos, 9, tc.payload, packets.Properties{})
				ack := c.expect(typ)
				require.Equal(t, uint16(9), ack.PacketID)
				require.Equal(t, tc.want.Code, ack.ReasonCode, "QoS %d", qos)
				c.stillOpen()
			}
		})
	}
	t.Run("message rate", func(t *testing.T) {
		c, _ := connectRaw(t, f.b.Addr(), 5, clientID("rf-rate"))
		c.publish("site/a", 1, 1, "x", packets.Properties{})
		c.publish("site/a", 1, 2, "x", packets.Properties{})
		c.expect(packets.Puback)
		c.expect(packets.Puback)
		c.publish("site/a", 2, 3, "x", packets.Properties{}) // over the burst
		rec := c.expect(packets.Pubrec)
		require.Equal(t, packets.ErrMessageRateTooHigh.Code, rec.ReasonCode)
	})
	require.Empty(t, f.ingested.of("rf"))

	// MQTT 3.1.1: a payload that does not decode is acknowledged by the
	// packet of its QoS, so the client does not resend it.
	c, _ := connectRaw(t, f.b.Addr(), 4, asDevice("rf", tok))
	c.publish("devices/rf/telemetry", 2, 4, "not json", packets.Properties{})
	rec := c.expect(packets.Pubrec)
	require.Equal(t, uint16(4), rec.PacketID)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 4})
	c.expect(packets.Pubcomp)
	// A log that is full leaves it unacknowledged: the connection closes.
	c.publish("devices/rf/telemetry", 2, 5, "full", packets.Properties{})
	require.Nil(t, c.closed(5*time.Second))
}

// gate is a commit that the test completes: the PUBACKs of what it holds
// stay in the connection's ackHold until then, as while the log fsyncs.
type gate struct {
	mu   sync.Mutex
	c    wal.Commit
	done func(error)
}

func newGate(t *testing.T, f *fixture) *gate {
	g := &gate{}
	g.c, g.done = wal.NewCommit()
	f.ingested.mu.Lock()
	f.ingested.commit = g.commit
	f.ingested.mu.Unlock()
	t.Cleanup(func() { g.open() }) // before the broker closes: a connection's Close waits for what it holds
	return g
}

func (g *gate) commit() wal.Commit {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.c
}

// open completes the current commit and starts the next.
func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done(nil)
	g.c, g.done = wal.NewCommit()
}

// TestReceiveMaximum: the broker advertises mqtt.receive_maximum and
// counts a publish until its acknowledgement is on the wire, the wait for
// the log's fsync included: a client with that many PUBACKs still held is
// at its limit, and one more publish disconnects it with 0x93, while a
// client that waits for its acknowledgements is never disconnected.
func TestReceiveMaximum(t *testing.T) {
	const max = 4
	f := newFixture(t, func(c *Config) { c.ReceiveMaximum = max; c.AllowAnonymous = true })
	tok := f.device(t, "rm")
	g := newGate(t, f)

	t.Run("held acknowledgements count", func(t *testing.T) {
		c, connack := connectRaw(t, f.b.Addr(), 5, asDevice("rm", tok))
		require.Equal(t, uint16(max), connack.Properties.ReceiveMaximum)
		for i := range max + 1 {
			c.publish("devices/rm/telemetry", 1, uint16(i+1), `{"t":1}`, packets.Properties{})
		}
		disc := c.closed(5 * time.Second)
		require.NotNil(t, disc, "DISCONNECT before the close")
		require.Equal(t, packets.ErrReceiveMaximum.Code, disc.ReasonCode)
		require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="receive_maximum"}`))
		g.open()
	})

	t.Run("a client at its limit that waits is never refused", func(t *testing.T) {
		c, _ := connectRaw(t, f.b.Addr(), 5, asDevice("rm", tok))
		n0 := len(f.ingested.of("rm"))
		id := uint16(0)
		for range 3 {
			for range max {
				id++
				c.publish("devices/rm/telemetry", 1, id, `{"t":1}`, packets.Properties{})
			}
			testenv.Eventually(t, 5*time.Second, "publishes held", func() bool { return len(f.ingested.of("rm")) >= n0+int(id) })
			g.open()
			for range max {
				require.Equal(t, packets.CodeSuccess.Code, c.expect(packets.Puback).ReasonCode)
			}
		}
		c.stillOpen()
	})

	t.Run("QoS 2 counts until PUBCOMP", func(t *testing.T) {
		c, _ := connectRaw(t, f.b.Addr(), 5, clientID("rm-q2"))
		for i := range 2 * max { // a refusing PUBREC ends the flow
			c.publish("devices/rm/telemetry", 2, uint16(100+i), "x", packets.Properties{})
			require.Equal(t, packets.ErrNotAuthorized.Code, c.expect(packets.Pubrec).ReasonCode)
		}
		for i := range max {
			c.publish("site/q2", 2, uint16(i+1), "x", packets.Properties{})
			c.expect(packets.Pubrec)
		}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 1})
		c.expect(packets.Pubcomp)
		c.publish("site/q2", 2, 5, "x", packets.Properties{}) // 4 unanswered again
		c.expect(packets.Pubrec)
		c.publish("site/q2", 1, 6, "x", packets.Properties{}) // the fifth
		disc := c.closed(5 * time.Second)
		require.NotNil(t, disc)
		require.Equal(t, packets.ErrReceiveMaximum.Code, disc.ReasonCode)
	})

	t.Run("MQTT 3.1.1 has no receive maximum", func(t *testing.T) {
		c, _ := connectRaw(t, f.b.Addr(), 4, asDevice("rm", tok))
		n0 := len(f.ingested.of("rm"))
		for i := range 3 * max {
			c.publish("devices/rm/telemetry", 1, uint16(i+1), `{"t":1}`, packets.Properties{})
		}
		c.publish("devices/rm/status", 2, 100, "x", packets.Properties{})
		testenv.Eventually(t, 5*time.Second, "publishes held", func() bool { return len(f.ingested.of("rm")) >= n0+3*max })
		g.open()
		require.Len(t, c.stillOpen(), 3*max+1)
	})
}

// TestServerKeepAlive: with mqtt.server_keep_alive an MQTT 5 client is
// told the server's keep alive in CONNACK and is disconnected when it is
// silent for one and a half times it; an MQTT 3.1.1 client, which cannot
// be told, is refused when its own keep alive is longer.
func TestServerKeepAlive(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ServerKeepAlive = time.Second; c.AllowAnonymous = true })

	c, connack := connectRaw(t, f.b.Addr(), 5, clientID("ka5")) // asks for 60 s
	require.True(t, connack.Properties.ServerKeepAliveFlag)
	require.Equal(t, uint16(1), connack.Properties.ServerKeepAlive)
	c.closed(10 * time.Second) // silent: cut off after 1.5 s, not 90

	v3 := dialRaw(t, f.b.Addr(), 4, clientID("ka3"))
	require.Equal(t, packets.Err3ClientIdentifierNotValid.Code, v3.expect(packets.Connack).ReasonCode)
	require.Equal(t, 1.0, f.metric(t, `telehub_mqtt_limit_hits_total{limit="keep_alive"}`))
	v3, _ = connectRaw(t, f.b.Addr(), 4, func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "ka3"; pk.Connect.Keepalive = 1 })
	v3.closed(10 * time.Second)

	// Off (the default): the client's own keep alive, not advertised.
	g := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	_, connack = connectRaw(t, g.b.Addr(), 5, clientID("ka-off"))
	require.False(t, connack.Properties.ServerKeepAliveFlag)
}

// TestMQTTJSAcks: MQTT.js, a strict MQTT 5 client we did not write,
// completes QoS 1 and 2 publishes that carry properties (it failed them
// while mochi copied the properties, with reason code 0x01, into the PUBACK).
func TestMQTTJSAcks(t *testing.T) {
	node := testenv.Tool(t, "node")
	root := testenv.RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "web", "node_modules", "mqtt", "package.json")); err != nil {
		testenv.Missing(t, "MQTT.js (npm ci --prefix web)")
	}
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	cmd := exec.Command(node, filepath.Join("web", "test", "mqtt5-acks.js"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TELEHUB_MQTT_URL=mqtt://"+f.b.Addr())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "node: %s", stderr.String())
	require.JSONEq(t, `{"1":"ok","2":"ok"}`, string(out))
}

// TestQoS2ResentBeforePubrel: a QoS 2 publish that a client sends again
// after a reconnect, its PUBREL not sent yet, is acknowledged with a PUBREC
// of success and delivered once [MQTT-4.3.3-10] (mochi answered 0x91,
// which the client takes for a failure of a message that went through).
func TestQoS2ResentBeforePubrel(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowAnonymous = true })
	sub, _ := connectRaw(t, f.b.Addr(), 5, clientID("dup-sub"))
	require.Equal(t, []byte{0}, sub.subscribe(1, "site/#"))
	persistent := func(pk *packets.Packet) {
		pk.Connect.ClientIdentifier, pk.Connect.Clean = "dup", false
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 300, true
	}
	c, _ := connectRaw(t, f.b.Addr(), 5, persistent)
	c.publish("site/dup", 2, 5, "once", packets.Properties{})
	require.Equal(t, packets.CodeSuccess.Code, c.expect(packets.Pubrec).ReasonCode)
	c.c.Close()

	c, connack := connectRaw(t, f.b.Addr(), 5, persistent)
	require.True(t, connack.SessionPresent)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, TopicName: "site/dup",
		PacketID: 5, Payload: []byte("once")})
	got := c.stillOpen()
	require.NotEmpty(t, got)
	for _, pk := range got {
		require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
		require.Equal(t, uint16(5), pk.PacketID)
		require.Equal(t, packets.CodeSuccess.Code, pk.ReasonCode, "%s", pk.Properties.ReasonString)
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 5})
	require.Equal(t, packets.CodeSuccess.Code, c.expect(packets.Pubcomp).ReasonCode)
	c.publish("site/marker", 0, 0, "m", packets.Properties{})
	require.Equal(t, "site/dup", sub.nextTopic())
	require.Equal(t, "site/marker", sub.nextTopic(), "delivered once")
}
