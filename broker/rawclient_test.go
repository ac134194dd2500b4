package broker

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/mqttwire"
)

// rawClient speaks MQTT over a bare connection (mqttwire), so a test sees
// every byte the broker sends: properties, reason codes, and which
// acknowledgement answers what. Its methods fail the test on errors.
type rawClient struct {
	t testing.TB
	c *mqttwire.Conn
}

// dialRaw connects and sends CONNECT; the caller reads the CONNACK.
func dialRaw(t testing.TB, addr string, version byte, connect func(*packets.Packet)) *rawClient {
	t.Helper()
	c, err := mqttwire.Dial(t.Context(), addr, version, connect)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c}
}

// connectRaw connects and requires a successful CONNACK, which it returns.
func connectRaw(t testing.TB, addr string, version byte, connect func(*packets.Packet)) (*rawClient, packets.Packet) {
	t.Helper()
	c := dialRaw(t, addr, version, connect)
	ack := c.expect(packets.Connack)
	require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode, "CONNACK: %s", ack.Properties.ReasonString)
	return c, ack
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	require.NoError(c.t, c.c.Send(pk))
}

// publish sends a PUBLISH with optional properties.
func (c *rawClient) publish(topic string, qos byte, id uint16, payload string, props packets.Properties) {
	c.t.Helper()
	require.NoError(c.t, c.c.Publish(topic, qos, false, id, 0, []byte(payload), props))
}

// read returns the next packet from the broker, or the error that ended
// the connection (io.EOF and the like) within the deadline.
func (c *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	return c.c.Read(timeout)
}

// expect reads the next packet and requires its type.
func (c *rawClient) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk, err := c.read(5 * time.Second)
	require.NoError(c.t, err, "waiting for packet type %d", typ)
	require.Equal(c.t, typ, pk.FixedHeader.Type, "packet type (got one with reason code %#x)", pk.ReasonCode)
	return pk
}

// closed waits until the broker closes the connection, skipping packets; it
// returns the DISCONNECT the broker sent first, if any.
func (c *rawClient) closed(timeout time.Duration) *packets.Packet {
	c.t.Helper()
	disc, err := c.c.Closed(timeout)
	require.NoError(c.t, err)
	return disc
}

// stillOpen requires that the connection is up: a PINGREQ gets its
// PINGRESP, after whatever else the broker sent before it, which is
// returned.
func (c *rawClient) stillOpen() []packets.Packet {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	var got []packets.Packet
	for {
		pk, err := c.read(5 * time.Second)
		require.NoError(c.t, err, "connection still open")
		if pk.FixedHeader.Type == packets.Pingresp {
			return got
		}
		require.NotEqual(c.t, packets.Disconnect, pk.FixedHeader.Type, "DISCONNECT %#x", pk.ReasonCode)
		got = append(got, pk)
	}
}
