package web

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxGather bounds what a live socket gathers before it writes: a batch
// larger than this goes out in several writes.
const maxGather = 64 << 10

// gatherConn is the connection under a live WebSocket. gorilla/websocket
// writes every frame with its own Write call; between gather and flush the
// frames are collected instead, so that the writer sends a batch of
// messages, still one frame each, with one system call. At 10,000 readings
// a second to each dashboard, a write per message cost more than the rest
// of the stream together. Outside a batch, writes go straight through (the
// handshake, pings, and the pongs and close replies gorilla writes from the
// reading goroutine).
type gatherConn struct {
	net.Conn
	mu        sync.Mutex
	gathering bool
	buf       []byte
}

// Write collects p while a batch is open, else writes it.
func (c *gatherConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.gathering {
		c.buf = append(c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// SetWriteDeadline is ignored within a batch: flush sets the deadline of
// the write that sends it.
func (c *gatherConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	gathering := c.gathering
	c.mu.Unlock()
	if gathering {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// gather opens a batch.
func (c *gatherConn) gather() {
	c.mu.Lock()
	c.gathering = true
	c.mu.Unlock()
}

// gathered returns the size of the open batch.
func (c *gatherConn) gathered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// flush closes the batch and writes it with the deadline. Only the
// goroutine that opened the batch calls it.
func (c *gatherConn) flush(deadline time.Time) error {
	c.mu.Lock()
	b := c.buf
	c.gathering = false
	c.buf = nil
	c.mu.Unlock()
	if len(b) == 0 {
		return nil
	}
	// The lock is not held across the write: a pong written meanwhile by
	// the reading goroutine goes out before or after the batch, each whole
	// (net.Conn writes do not interleave).
	c.Conn.SetWriteDeadline(deadline)
	_, err := c.Conn.Write(b)
	if cap(b) <= 2*maxGather {
		c.mu.Lock()
		if c.buf == nil {
			c.buf = b[:0]
		}
		c.mu.Unlock()
	}
	return err
}

// gatherHijacker hands gorilla's upgrader a gatherConn instead of the
// hijacked connection.
type gatherHijacker struct {
	http.ResponseWriter
	conn *gatherConn
}

func (h *gatherHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &gatherConn{Conn: c}
	return h.conn, brw, nil
}

func (h *gatherHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// pacer spaces a stream's writes by StreamConfig.WriteEvery. Waking the
// writer and writing for every message costs two context switches and a
// system call per message and client; at 10,000 messages a second that
// was most of the stream's CPU, which the publishers then lacked. With
// writes at most every millisecond, a busy stream sends batches and an
// idle one still sends each message at once.
type pacer struct {
	next  time.Time
	timer *time.Timer
}

// wrote notes a write: the next one waits until every has passed.
func (p *pacer) wrote(every time.Duration) {
	if every > 0 {
		p.next = time.Now().Add(every)
	}
}

// wait returns once the next write may go, false if ctx ends first.
func (p *pacer) wait(ctx context.Context) bool {
	if p.next.IsZero() {
		return ctx.Err() == nil
	}
	d := time.Until(p.next)
	p.next = time.Time{}
	if d <= 0 {
		return ctx.Err() == nil
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
