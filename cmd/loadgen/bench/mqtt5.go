package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mqtt5 is a bare MQTT 5 client on one TCP connection, its packets encoded
// and decoded by mochi's codec: for what cmd/loadgen/load's MQTT 3.1.1 client
// cannot do (topic aliases, retained messages, PUBACK reason codes). Not
// safe for concurrent use.
type mqtt5 struct {
	conn net.Conn
	r    *bufio.Reader
	buf  bytes.Buffer
}

// dialMQTT5 connects with a clean start and returns the client and the
// CONNACK; a CONNACK that refuses is an error.
func dialMQTT5(ctx context.Context, addr, clientID, user, pass string) (*mqtt5, packets.Packet, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, packets.Packet{}, err
	}
	c := &mqtt5{conn: conn, r: bufio.NewReader(conn)}
	err = c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: clientID,
			UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass)}})
	if err != nil {
		conn.Close()
		return nil, packets.Packet{}, err
	}
	ack, err := c.read(10 * time.Second)
	switch {
	case err != nil:
		err = fmt.Errorf("connack: %w", err)
	case ack.FixedHeader.Type != packets.Connack:
		err = fmt.Errorf("connack: got packet type %d", ack.FixedHeader.Type)
	case ack.ReasonCode >= 0x80:
		err = fmt.Errorf("connack: reason code 0x%02x", ack.ReasonCode)
	}
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	return c, ack, nil
}

// send encodes and writes a CONNECT or PUBLISH.
func (c *mqtt5) send(pk packets.Packet) error {
	pk.ProtocolVersion = 5
	c.buf.Reset()
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&c.buf)
	case packets.Publish:
		err = pk.PublishEncode(&c.buf)
	default:
		err = fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = c.conn.Write(c.buf.Bytes())
	return err
}

// publish sends a PUBLISH; alias 0 sends none, id is the packet ID of a
// QoS 1 publish.
func (c *mqtt5) publish(topic string, alias uint16, qos byte, retain bool, id uint16, payload []byte) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName: topic, PacketID: id, Payload: payload}
	if alias > 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	return c.send(pk)
}

// read reads the next packet, decoding CONNACK, PUBACK and DISCONNECT;
// io.EOF when the broker closed the connection.
func (c *mqtt5) read(timeout time.Duration) (packets.Packet, error) {
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

// pubacks reads n PUBACKs (other packets are skipped) and counts them by
// reason code. A DISCONNECT from the broker is an error naming its reason.
func (c *mqtt5) pubacks(n int, timeout time.Duration) (map[byte]int, error) {
	codes := map[byte]int{}
	for got := 0; got < n; {
		pk, err := c.read(timeout)
		if err != nil {
			return codes, fmt.Errorf("puback %d of %d: %w", got+1, n, err)
		}
		switch pk.FixedHeader.Type {
		case packets.Puback:
			codes[pk.ReasonCode]++
			got++
		case packets.Disconnect:
			return codes, fmt.Errorf("disconnected with reason code 0x%02x after %d of %d pubacks", pk.ReasonCode, got, n)
		}
	}
	return codes, nil
}

// close ends the connection without a DISCONNECT.
func (c *mqtt5) close() error { return c.conn.Close() }
