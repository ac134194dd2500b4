package web

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/live"
)

// A ping from the client is answered (by gorilla, from the reading
// goroutine) while the writer streams batches: the pong is not held in a
// batch and does not split a frame.
func TestLivePingAnsweredWhileStreaming(t *testing.T) {
	hub := live.New(1 << 14)
	srv := newServer(t, hub)
	c := dial(t, srv, "")
	pongs := make(chan string, 10)
	c.SetPongHandler(func(s string) error { pongs <- s; return nil })

	done := make(chan struct{})
	go func() {
		defer close(done)
		publishN(hub, 0, 5000, "")
	}()
	require.NoError(t, c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(5*time.Second)))
	got := 0
	for got < 5000 {
		f := next(t, c) // reading also runs the pong handler
		require.Equal(t, "reading", f.Kind)
		require.Equal(t, got, f.N, "every message in its own frame, in order")
		got++
	}
	<-done
	// The pong may come after the last reading: read on until it does.
	deadline := time.Now().Add(10 * time.Second)
	for i := 5000; ; i++ {
		select {
		case p := <-pongs:
			require.Equal(t, "p1", p)
			return
		default:
		}
		require.True(t, time.Now().Before(deadline), "no pong")
		publishN(hub, i, 1, "")
		require.Equal(t, i, next(t, c).N)
	}
}

func TestPacerSpacesWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p pacer
		defer p.stop()
		ctx := context.Background()
		start := time.Now()
		require.True(t, p.wait(ctx))
		require.Equal(t, start, time.Now(), "the first write does not wait")

		p.wrote(time.Millisecond)
		require.True(t, p.wait(ctx))
		require.Equal(t, start.Add(time.Millisecond), time.Now(), "the next write waits for the interval")

		p.wrote(time.Millisecond)
		time.Sleep(3 * time.Millisecond)
		require.True(t, p.wait(ctx))
		require.Equal(t, start.Add(4*time.Millisecond), time.Now(), "no wait once the interval has passed")

		p.wrote(0)
		require.True(t, p.wait(ctx))
		require.Equal(t, start.Add(4*time.Millisecond), time.Now(), "a zero interval never waits")

		ctx, cancel := context.WithCancel(ctx)
		p.wrote(time.Second)
		cancel()
		require.False(t, p.wait(ctx), "a cancelled context ends the wait")
	})
}
