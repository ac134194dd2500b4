// Package load generates MQTT load for benchmarks: thousands of device
// connections from one process over a minimal MQTT 3.1.1 client, open-loop
// pacing at a target total rate, realistic JSON readings that carry their
// send time, latency percentiles, and watchers (MQTT subscribers and
// WebSocket dashboards) that measure delivery.
//
// The client here is purpose-built: paho keeps several goroutines, channels
// and a message store per connection, which is fine for a device and too
// heavy for fifty thousand of them in one process. It speaks only what a
// benchmark device needs: CONNECT, PUBLISH at QoS 0 and 1, PUBACK,
// SUBSCRIBE, PINGREQ and DISCONNECT.
package load

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MQTT control packet types (MQTT 3.1.1, section 2.2.1).
const (
	typeConnect    = 1
	typeConnack    = 2
	typePublish    = 3
	typePuback     = 4
	typeSubscribe  = 8
	typeSuback     = 9
	typePingreq    = 12
	typePingresp   = 13
	typeDisconnect = 14
)

// maxPacket bounds a packet the client reads; a larger one ends the
// connection.
const maxPacket = 1 << 20

// ConnectError is a CONNACK that refused the connection.
type ConnectError struct {
	// Code is the CONNACK return code (MQTT 3.1.1, section 3.2.2.3).
	Code byte
}

// Error names the return code.
func (e *ConnectError) Error() string {
	reasons := map[byte]string{1: "unacceptable protocol version", 2: "identifier rejected",
		3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}
	return fmt.Sprintf("mqtt: connection refused: %d %s", e.Code, reasons[e.Code])
}

// Dialer connects clients.
type Dialer struct {
	// Addr is the broker's host:port.
	Addr string
	// LocalIP is the source address; nil lets the kernel choose. Spreading
	// clients over 127.0.0.x multiplies the ephemeral ports available.
	LocalIP net.IP
	// KeepAlive is sent in CONNECT; 0 turns keep-alive off.
	KeepAlive time.Duration
	// Timeout bounds the TCP connect and the wait for CONNACK.
	Timeout time.Duration
	// ReadBuffer is the size of the client's read buffer (default 512).
	ReadBuffer int
}

// Client is one MQTT 3.1.1 connection with a clean session. Writes are safe
// for concurrent use; one goroutine reads, in ReadLoop.
type Client struct {
	conn net.Conn
	br   *bufio.Reader

	wmu    sync.Mutex
	nextID uint16 // guarded by wmu
	wbuf   []byte // guarded by wmu

	closing atomic.Bool // Disconnect or Close was called
}

// Dial connects and sends CONNECT with the client ID and credentials (both
// may be empty), and returns once the broker has accepted it. A refusal is a
// *ConnectError.
func (d Dialer) Dial(ctx context.Context, clientID, username, password string) (*Client, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	nd := net.Dialer{Timeout: timeout}
	if d.LocalIP != nil {
		nd.LocalAddr = &net.TCPAddr{IP: d.LocalIP}
	}
	conn, err := nd.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt: dial %s: %w", d.Addr, err)
	}
	c := &Client{conn: conn, br: bufio.NewReaderSize(conn, max(d.ReadBuffer, 512))}
	conn.SetDeadline(time.Now().Add(timeout))
	if err := c.connect(clientID, username, password, d.KeepAlive); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *Client) connect(clientID, username, password string, keepAlive time.Duration) error {
	var flags byte = 0x02 // clean session
	body := appendString(nil, "MQTT")
	body = append(body, 4) // protocol level 3.1.1
	if username != "" {
		flags |= 0x80
	}
	if password != "" {
		flags |= 0x40
	}
	body = append(body, flags)
	body = binary.BigEndian.AppendUint16(body, uint16(min(keepAlive/time.Second, 65535)))
	body = appendString(body, clientID)
	if username != "" {
		body = appendString(body, username)
	}
	if password != "" {
		body = appendString(body, password)
	}
	pkt := appendHeader(nil, typeConnect<<4, len(body))
	if _, err := c.conn.Write(append(pkt, body...)); err != nil {
		return fmt.Errorf("mqtt: send connect: %w", err)
	}
	typ, b, err := c.readPacket(nil)
	if err != nil {
		return fmt.Errorf("mqtt: read connack: %w", err)
	}
	if typ>>4 != typeConnack || len(b) != 2 {
		return fmt.Errorf("mqtt: expected connack, got packet type %d", typ>>4)
	}
	if b[1] != 0 {
		return &ConnectError{Code: b[1]}
	}
	return nil
}

// Publish sends a PUBLISH and returns its packet identifier (0 at QoS 0).
// With at set, it is called with the identifier under the write lock before
// the packet is written, so a PUBACK can never be read before the caller has
// recorded what it acknowledges.
func (c *Client) Publish(topic string, qos byte, payload []byte, at func(id uint16)) (uint16, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 2 + len(topic) + len(payload)
	var id uint16
	if qos > 0 {
		n += 2
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id = c.nextID
	}
	b := appendHeader(c.wbuf[:0], typePublish<<4|qos<<1, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	b = append(b, payload...)
	c.wbuf = b
	if at != nil {
		at(id)
	}
	if _, err := c.conn.Write(b); err != nil {
		return id, fmt.Errorf("mqtt: publish: %w", err)
	}
	return id, nil
}

// Subscribe sends a SUBSCRIBE for one filter and waits for its SUBACK. Call
// it before ReadLoop.
func (c *Client) Subscribe(filter string, qos byte) error {
	body := binary.BigEndian.AppendUint16(nil, 1)
	body = appendString(body, filter)
	body = append(body, qos)
	c.wmu.Lock()
	_, err := c.conn.Write(append(appendHeader(nil, typeSubscribe<<4|0x02, len(body)), body...))
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("mqtt: subscribe: %w", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		typ, b, err := c.readPacket(nil)
		if err != nil {
			return fmt.Errorf("mqtt: read suback: %w", err)
		}
		if typ>>4 != typeSuback {
			continue // a retained message or a ping answer before the SUBACK
		}
		if len(b) < 3 || b[2] == 0x80 {
			return fmt.Errorf("mqtt: subscription to %q refused", filter)
		}
		return nil
	}
}

// Ping sends a PINGREQ; the PINGRESP is consumed by ReadLoop, or left in the
// socket of a client that reads nothing.
func (c *Client) Ping() error {
	return c.write([]byte{typePingreq << 4, 0})
}

// Disconnect sends DISCONNECT and closes the connection.
func (c *Client) Disconnect() error {
	c.closing.Store(true)
	c.write([]byte{typeDisconnect << 4, 0})
	return c.conn.Close()
}

// Close closes the connection without DISCONNECT, as a device that loses
// power does.
func (c *Client) Close() error {
	c.closing.Store(true)
	return c.conn.Close()
}

func (c *Client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.conn.Write(b)
	c.conn.SetWriteDeadline(time.Time{})
	return err
}

// Handler is told what a client's ReadLoop receives. Its methods run on the
// read goroutine and must return quickly.
type Handler interface {
	// Puback is a PUBACK for the packet identifier.
	Puback(id uint16)
	// Message is a PUBLISH received on a subscription; the slices are only
	// valid during the call.
	Message(topic, payload []byte)
}

// ReadLoop reads packets until the connection ends and returns why (nil
// after Close or Disconnect). It answers QoS 1 messages with PUBACK.
func (c *Client) ReadLoop(h Handler) error {
	var buf []byte
	for {
		typ, b, err := c.readPacket(buf)
		if err != nil {
			if c.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		buf = b[:0]
		switch typ >> 4 {
		case typePuback:
			if len(b) >= 2 {
				h.Puback(binary.BigEndian.Uint16(b))
			}
		case typePublish:
			qos := typ >> 1 & 3
			if len(b) < 2 {
				return errors.New("mqtt: short publish")
			}
			tl := int(binary.BigEndian.Uint16(b))
			rest := b[2:]
			if len(rest) < tl {
				return errors.New("mqtt: short publish topic")
			}
			topic, rest := rest[:tl], rest[tl:]
			if qos > 0 {
				if len(rest) < 2 {
					return errors.New("mqtt: publish without packet identifier")
				}
				id := binary.BigEndian.Uint16(rest)
				rest = rest[2:]
				if err := c.write([]byte{typePuback << 4, 2, byte(id >> 8), byte(id)}); err != nil {
					return fmt.Errorf("mqtt: puback: %w", err)
				}
			}
			h.Message(topic, rest)
		}
	}
}

// readPacket reads one packet into buf and returns its first header byte
// and its body.
func (c *Client) readPacket(buf []byte) (byte, []byte, error) {
	typ, err := c.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return 0, nil, errors.New("mqtt: malformed remaining length")
		}
		d, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("mqtt: packet of %d bytes is over the limit", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return 0, nil, err
	}
	return typ, buf, nil
}

// appendHeader appends a fixed header: the first byte and the remaining
// length as a variable byte integer.
func appendHeader(b []byte, first byte, n int) []byte {
	b = append(b, first)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}
