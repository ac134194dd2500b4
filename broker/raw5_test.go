package broker

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/mqttwire"
)

// raw5 is a bare MQTT 5 client (mqttwire) with the calls the alias tests
// and the flood benchmark use: for what the command-line clients cannot do,
// such as setting many topic aliases on one connection or reading CONNACK
// properties.
type raw5 struct{ c *mqttwire.Conn }

// dialRaw5 connects and returns the client and the CONNACK.
func dialRaw5(t testing.TB, addr, clientID, user, pass string) (*raw5, packets.Packet) {
	t.Helper()
	c, err := mqttwire.Dial(t.Context(), addr, 5, func(pk *packets.Packet) {
		pk.Connect.ClientIdentifier, pk.Connect.Username, pk.Connect.Password = clientID, []byte(user), []byte(pass)
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	ack, err := c.Read(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	return &raw5{c}, ack
}

// publish sends a PUBLISH with an optional topic alias (0: none).
func (c *raw5) publish(t testing.TB, topic string, alias uint16, qos byte, id uint16, payload []byte) {
	t.Helper()
	require.NoError(t, c.c.Publish(topic, qos, false, id, alias, payload, packets.Properties{}))
}

// read reads the next packet; io.EOF when the broker closed the connection.
func (c *raw5) read(timeout time.Duration) (packets.Packet, error) { return c.c.Read(timeout) }

// closed reads until the broker closes the connection and returns the
// reason code of its DISCONNECT, if it sent one (0 if not).
func (c *raw5) closed(t testing.TB) byte {
	t.Helper()
	disc, err := c.c.Closed(10 * time.Second)
	require.NoError(t, err)
	if disc == nil {
		return 0
	}
	return disc.ReasonCode
}
