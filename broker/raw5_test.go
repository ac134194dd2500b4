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

// raw5 is a bare MQTT 5 client on a TCP connection, packets encoded and
// decoded with mochi's codec: for what the command-line clients cannot do,
// such as setting many topic aliases on one connection or reading CONNACK
// properties.
type raw5 struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRaw5 connects and returns the client and the CONNACK.
func dialRaw5(t testing.TB, addr, clientID, user, pass string) (*raw5, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &raw5{conn: conn, r: bufio.NewReader(conn)}
	c.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: clientID,
			UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass)}})
	ack, err := c.read(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	return c, ack
}

// send encodes and writes a CONNECT or PUBLISH.
func (c *raw5) send(t testing.TB, pk packets.Packet) {
	t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	switch pk.FixedHeader.Type {
	case packets.Connect:
		require.NoError(t, pk.ConnectEncode(&buf))
	case packets.Publish:
		require.NoError(t, pk.PublishEncode(&buf))
	default:
		t.Fatalf("raw5 cannot send packet type %d", pk.FixedHeader.Type)
	}
	_, err := c.conn.Write(buf.Bytes())
	require.NoError(t, err)
}

// publish sends a PUBLISH with an optional topic alias (0: none).
func (c *raw5) publish(t testing.TB, topic string, alias uint16, qos byte, id uint16, payload []byte) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: payload}
	if alias > 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	c.send(t, pk)
}

// read reads the next packet; io.EOF when the broker closed the connection.
func (c *raw5) read(timeout time.Duration) (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	if pk.FixedHeader.Remaining, _, err = packets.DecodeLength(c.r); err != nil {
		return pk, err
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// closed reads until the broker closes the connection and returns the
// reason code of its DISCONNECT, if it sent one (0 if not).
func (c *raw5) closed(t testing.TB) byte {
	t.Helper()
	var code byte
	for {
		pk, err := c.read(10 * time.Second)
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the broker did not close the connection")
			return code
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			code = pk.ReasonCode
		}
	}
}
