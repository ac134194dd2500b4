// Package mqttwire is a bare MQTT client on one connection, its packets
// encoded and decoded by mochi's codec: for the tests and benchmarks that
// must send or see what a full client hides (reason codes and properties of
// each acknowledgement, topic aliases, more publishes in flight than a
// client would allow). It keeps no state: the caller chooses packet IDs and
// reads the answers. Not safe for concurrent use.
package mqttwire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Conn is one MQTT connection.
type Conn struct {
	conn    net.Conn
	r       *bufio.Reader
	buf     bytes.Buffer
	version byte
}

// Dial connects to addr over TCP and sends a CONNECT of the protocol
// version (4: 3.1.1, 5) with a clean start, keep alive 60 s and client ID
// "raw", which connect may change; the caller reads the CONNACK. The
// username and password flags follow the fields connect sets.
func Dial(ctx context.Context, addr string, version byte, connect func(*packets.Packet)) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{conn: nc, r: bufio.NewReader(nc), version: version}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "raw"}}
	if connect != nil {
		connect(&pk)
	}
	pk.Connect.UsernameFlag = len(pk.Connect.Username) > 0
	pk.Connect.PasswordFlag = len(pk.Connect.Password) > 0
	if err := c.Send(pk); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Send encodes and writes a CONNECT, PUBLISH, PUBACK, PUBREL, SUBSCRIBE or
// PINGREQ in the connection's protocol version.
func (c *Conn) Send(pk packets.Packet) error {
	pk.ProtocolVersion = c.version
	c.buf.Reset()
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&c.buf)
	case packets.Publish:
		err = pk.PublishEncode(&c.buf)
	case packets.Puback:
		err = pk.PubackEncode(&c.buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&c.buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&c.buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&c.buf)
	default:
		err = fmt.Errorf("mqttwire: cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = c.conn.Write(c.buf.Bytes())
	return err
}

// Publish sends a PUBLISH. alias 0 sends no topic alias; id is the packet
// ID of a QoS 1 or 2 publish.
func (c *Conn) Publish(topic string, qos byte, retain bool, id, alias uint16, payload []byte, props packets.Properties) error {
	if alias > 0 {
		props.TopicAlias, props.TopicAliasFlag = alias, true
	}
	return c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName: topic, PacketID: id, Payload: payload, Properties: props})
}

// Read returns the next packet within timeout, decoded when it is a
// CONNACK, PUBLISH, PUBACK, PUBREC, PUBCOMP, SUBACK or DISCONNECT (other
// types come with their fixed header only), or the error that ended the
// connection (io.EOF when the broker closed it).
func (c *Conn) Read(timeout time.Duration) (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	pk := packets.Packet{ProtocolVersion: c.version}
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
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
	}
	return pk, err
}

// ErrStillOpen is returned by Closed when the broker kept the connection
// open for the whole timeout.
var ErrStillOpen = errors.New("mqttwire: the broker did not close the connection")

// Closed reads, skipping packets, until the broker closes the connection,
// and returns the DISCONNECT it sent before, if any.
func (c *Conn) Closed(timeout time.Duration) (*packets.Packet, error) {
	deadline := time.Now().Add(timeout)
	var disc *packets.Packet
	for {
		pk, err := c.Read(time.Until(deadline))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return disc, ErrStillOpen
		case err != nil:
			return disc, nil
		case pk.FixedHeader.Type == packets.Disconnect:
			disc = &pk
		}
	}
}

// Close ends the connection without a DISCONNECT.
func (c *Conn) Close() error { return c.conn.Close() }
