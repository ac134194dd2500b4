package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/internal/mqttwire"
)

// mqtt5 is a bare MQTT 5 client (mqttwire) for what cmd/loadgen/load's
// MQTT 3.1.1 client cannot do: topic aliases, retained messages, PUBACK
// reason codes. Not safe for concurrent use.
type mqtt5 struct{ c *mqttwire.Conn }

// dialMQTT5 connects with a clean start and returns the client and the
// CONNACK; a CONNACK that refuses is an error.
func dialMQTT5(ctx context.Context, addr, clientID, user, pass string) (*mqtt5, packets.Packet, error) {
	c, err := mqttwire.Dial(ctx, addr, 5, func(pk *packets.Packet) {
		pk.Connect.ClientIdentifier, pk.Connect.Username, pk.Connect.Password = clientID, []byte(user), []byte(pass)
	})
	if err != nil {
		return nil, packets.Packet{}, err
	}
	ack, err := c.Read(10 * time.Second)
	switch {
	case err != nil:
		err = fmt.Errorf("connack: %w", err)
	case ack.FixedHeader.Type != packets.Connack:
		err = fmt.Errorf("connack: got packet type %d", ack.FixedHeader.Type)
	case ack.ReasonCode >= 0x80:
		err = fmt.Errorf("connack: reason code 0x%02x", ack.ReasonCode)
	}
	if err != nil {
		c.Close()
		return nil, ack, err
	}
	return &mqtt5{c}, ack, nil
}

// publish sends a PUBLISH; alias 0 sends none, id is the packet ID of a
// QoS 1 publish.
func (c *mqtt5) publish(topic string, alias uint16, qos byte, retain bool, id uint16, payload []byte) error {
	return c.c.Publish(topic, qos, retain, id, alias, payload, packets.Properties{})
}

// pubacks reads n PUBACKs (other packets are skipped) and counts them by
// reason code. A DISCONNECT from the broker is an error naming its reason.
func (c *mqtt5) pubacks(n int, timeout time.Duration) (map[byte]int, error) {
	codes := map[byte]int{}
	for got := 0; got < n; {
		pk, err := c.c.Read(timeout)
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
func (c *mqtt5) close() error { return c.c.Close() }
