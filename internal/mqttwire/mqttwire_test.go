package mqttwire

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestAgainstMochi: a connection to a real mochi broker connects, gets a
// PUBACK of its packet ID, a SUBACK and its own message back, and sees the
// broker close it.
func TestAgainstMochi(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	require.NoError(t, srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })

	for _, version := range []byte{4, 5} {
		c, err := Dial(t.Context(), addr, version, func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "c" + string('0'+version) })
		require.NoError(t, err)
		ack, err := c.Read(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
		require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode)

		require.NoError(t, c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "a/#", Qos: 1}}}))
		require.Equal(t, packets.Suback, mustRead(t, c).FixedHeader.Type)
		require.NoError(t, c.Publish("a/b", 1, false, 7, 0, []byte("hi"), packets.Properties{}))
		var gotAck, gotMsg bool
		for !gotAck || !gotMsg {
			pk := mustRead(t, c)
			switch pk.FixedHeader.Type {
			case packets.Puback:
				require.Equal(t, uint16(7), pk.PacketID)
				gotAck = true
			case packets.Publish:
				require.Equal(t, "a/b", pk.TopicName)
				require.Equal(t, []byte("hi"), pk.Payload)
				require.NoError(t, c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}))
				gotMsg = true
			}
		}
		_, err = c.Closed(50 * time.Millisecond)
		require.ErrorIs(t, err, ErrStillOpen)

		cl, ok := srv.Clients.Get("c" + string('0'+version))
		require.True(t, ok)
		_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown) // returns the code it sent
		disc, err := c.Closed(5 * time.Second)
		require.NoError(t, err)
		if version == 5 {
			require.NotNil(t, disc, "an MQTT 5 client is told why")
			require.Equal(t, packets.ErrServerShuttingDown.Code, disc.ReasonCode)
		}
	}
}

func mustRead(t *testing.T, c *Conn) packets.Packet {
	t.Helper()
	pk, err := c.Read(5 * time.Second)
	require.NoError(t, err)
	return pk
}
