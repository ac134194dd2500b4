package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
	"github.com/telehub/telehub/internal/wal"
)

// heldBytes returns what the connection holds back.
func (a *ackHold) heldBytes() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return string(a.buf)
}

func pipe(t *testing.T) (*ackHold, net.Conn) {
	t.Helper()
	srv, cli := net.Pipe()
	a := newAckHold(srv, nil)
	t.Cleanup(func() { a.Close(); cli.Close() })
	return a, cli
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	require.NoError(t, err)
	return string(b)
}

func TestAckHoldWritesAtOnceWhenNothingIsHeld(t *testing.T) {
	a, cli := pipe(t)
	go a.Write([]byte("ping"))
	require.Equal(t, "ping", readN(t, cli, 4))
}

func TestAckHoldReleasesWritesAfterTheirCommitsInOrder(t *testing.T) {
	a, cli := pipe(t)
	c1, done1 := wal.NewCommit()
	c2, done2 := wal.NewCommit()
	require.NoError(t, a.hold(c1))
	n, err := a.Write([]byte("A"))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, a.hold(c2))
	_, err = a.Write([]byte("B"))
	require.NoError(t, err)

	// The second commit finishing first releases nothing: B waits for A's.
	done2(nil)
	require.Equal(t, "AB", a.heldBytes())
	done1(nil)
	require.Equal(t, "AB", readN(t, cli, 2))

	// Nothing held any more: the next write goes straight out.
	go a.Write([]byte("C"))
	require.Equal(t, "C", readN(t, cli, 1))
}

func TestAckHoldWriteWaitsOnlyForEarlierHolds(t *testing.T) {
	a, cli := pipe(t)
	c1, done1 := wal.NewCommit()
	c2, done2 := wal.NewCommit()
	require.NoError(t, a.hold(c1))
	_, err := a.Write([]byte("A")) // needs c1
	require.NoError(t, err)
	require.NoError(t, a.hold(c2))
	_, err = a.Write([]byte("B")) // needs c1 and c2
	require.NoError(t, err)
	done1(nil)
	require.Equal(t, "A", readN(t, cli, 1))
	require.Equal(t, "B", a.heldBytes())
	done2(nil)
	require.Equal(t, "B", readN(t, cli, 1))
}

func TestAckHoldClosesInsteadOfAcknowledgingAFailedCommit(t *testing.T) {
	a, cli := pipe(t)
	c1, done1 := wal.NewCommit()
	require.NoError(t, a.hold(c1))
	_, err := a.Write([]byte("PUBACK"))
	require.NoError(t, err)
	done1(errors.New("disk on fire"))
	_, err = cli.Read(make([]byte, 8))
	require.ErrorIs(t, err, io.EOF, "the client sees the connection close, not the acknowledgement")
	_, err = a.Write([]byte("more"))
	require.ErrorContains(t, err, "disk on fire")
}

func TestAckHoldCloseLetsHeldBytesOut(t *testing.T) {
	a, cli := pipe(t)
	c1, done1 := wal.NewCommit()
	require.NoError(t, a.hold(c1))
	_, err := a.Write([]byte("DISCONNECT"))
	require.NoError(t, err)
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(cli)
		got <- string(b)
	}()
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	done1(nil)
	require.NoError(t, <-closed)
	require.Equal(t, "DISCONNECT", <-got)
}

func TestAckHoldBoundsThePendingHolds(t *testing.T) {
	a, _ := pipe(t)
	for range maxHolds {
		c, _ := wal.NewCommit()
		require.NoError(t, a.hold(c))
	}
	c, done := wal.NewCommit()
	done(errors.New("refused"))
	require.ErrorContains(t, a.hold(c), "refused", "past the bound, hold waits for the commit itself")
}

func TestAckHoldMergesHoldsOfOneGroupCommit(t *testing.T) {
	l, err := wal.Open(t.TempDir(), wal.Options{SyncInterval: time.Hour}, testenv.Logger(t))
	require.NoError(t, err)
	defer l.Close()
	_, err = l.Append(context.Background(), []byte("first")) // commits at once; the next waits the interval
	require.NoError(t, err)

	a, cli := pipe(t)
	for _, ack := range []string{"A", "B"} {
		c, err := l.Submit(context.Background(), []byte(ack))
		require.NoError(t, err)
		require.NoError(t, a.hold(c))
		_, err = a.Write([]byte(ack))
		require.NoError(t, err)
	}
	a.mu.Lock()
	require.Len(t, a.pending, 1, "one entry for the two appends of one group")
	require.Equal(t, uint64(2), a.pending[0].n)
	a.mu.Unlock()
	require.Equal(t, "AB", a.heldBytes())

	require.NoError(t, l.Close()) // commits the open group
	require.Equal(t, "AB", readN(t, cli, 2))
}

func TestAckHoldBoundsTheHeldBytes(t *testing.T) {
	a, cli := pipe(t)
	c1, done1 := wal.NewCommit()
	require.NoError(t, a.hold(c1))
	_, err := a.Write(make([]byte, maxHeldBytes)) // held: the bound is reached
	require.NoError(t, err)

	var committed atomic.Bool
	wrote := make(chan bool, 1)
	go func() {
		_, err := a.Write([]byte("x")) // past the bound: waits for the flusher
		wrote <- err == nil && committed.Load()
	}()
	go io.Copy(io.Discard, cli)
	committed.Store(true)
	done1(nil)
	require.True(t, <-wrote, "the write past the bound returned only after the held bytes could go out")
}

// TestAnswers: the packets that end a client's publish for its receive
// maximum are counted in a stream of whole packets, whatever else is in it.
func TestAnswers(t *testing.T) {
	enc := func(pks ...packets.Packet) []byte {
		var b bytes.Buffer
		for _, pk := range pks {
			pk.ProtocolVersion = 5
			var err error
			switch pk.FixedHeader.Type {
			case packets.Publish:
				err = pk.PublishEncode(&b)
			case packets.Puback:
				err = pk.PubackEncode(&b)
			case packets.Pubrec:
				err = pk.PubrecEncode(&b)
			case packets.Pubrel:
				err = pk.PubrelEncode(&b)
			case packets.Pubcomp:
				err = pk.PubcompEncode(&b)
			}
			require.NoError(t, err)
		}
		return b.Bytes()
	}
	ack := func(typ byte, code packets.Code) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: 7, ReasonCode: code.Code,
			Properties: packets.Properties{ReasonString: code.Reason}}
	}
	big := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: 3,
		Payload: bytes.Repeat([]byte{0x40}, 300)} // a payload of PUBACK type bytes, over a one-byte length
	stream := enc(ack(packets.Puback, packets.CodeSuccess), big, ack(packets.Pubrec, packets.CodeSuccess),
		ack(packets.Pubrec, packets.ErrNotAuthorized), ack(packets.Pubrel, packets.CodeSuccess),
		ack(packets.Pubcomp, packets.CodeSuccess), ack(packets.Puback, packets.ErrQuotaExceeded))
	require.Equal(t, int32(4), answers(stream))
	require.Equal(t, int32(0), answers(enc(big)))
	require.Equal(t, int32(3), answers(stream[:len(stream)-1]), "a cut packet is not counted")
	require.Equal(t, int32(0), answers(nil))
}
