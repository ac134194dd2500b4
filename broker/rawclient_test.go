package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// rawClient speaks MQTT over a bare connection with mochi's packets
// package, so a test sees every byte the broker sends: properties, reason
// codes, and which acknowledgement answers what.
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

// dialRaw connects and sends CONNECT; the caller reads the CONNACK.
func dialRaw(t testing.TB, addr string, version byte, connect func(*packets.Packet)) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "raw"}}
	if connect != nil {
		connect(&pk)
	}
	pk.Connect.UsernameFlag = len(pk.Connect.Username) > 0
	pk.Connect.PasswordFlag = len(pk.Connect.Password) > 0
	c.send(pk)
	return c
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
	pk.ProtocolVersion = c.version
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&b)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&b)
	case packets.Pingreq:
		err = pk.PingreqEncode(&b)
	default:
		c.t.Fatalf("rawClient cannot send packet type %d", pk.FixedHeader.Type)
	}
	require.NoError(c.t, err)
	_, err = c.conn.Write(b.Bytes())
	require.NoError(c.t, err)
}

// publish sends a PUBLISH with optional properties.
func (c *rawClient) publish(topic string, qos byte, id uint16, payload string, props packets.Properties) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic,
		PacketID: id, Payload: []byte(payload), Properties: props})
}

// read returns the next packet from the broker, or the error that ended
// the connection (io.EOF and the like) within the deadline.
func (c *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(timeout)))
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = c.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		c.t.Fatalf("rawClient got unexpected packet type %d", pk.FixedHeader.Type)
	}
	require.NoError(c.t, err)
	return pk, nil
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
func (c *rawClient) closed(timeout time.Duration) (disc *packets.Packet) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pk, err := c.read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "the broker did not close the connection")
			return disc
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			disc = &pk
		}
	}
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
