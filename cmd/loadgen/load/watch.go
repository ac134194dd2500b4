package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Watch measures what reaches a set of watchers (dashboards, subscribers):
// how many readings, and the latency from each reading's sent_us to its
// arrival. Safe for concurrent use.
type Watch struct {
	readings atomic.Int64
	gaps     atomic.Int64 // gap notices of the live stream: the watcher fell behind
	latency  Histogram
}

// observe records one received document, if it carries a send time.
func (w *Watch) observe(doc []byte, at time.Time) {
	sent, ok := SentAt(doc)
	if !ok {
		return
	}
	w.readings.Add(1)
	w.latency.Record(at.Sub(sent))
}

// Reset starts a new measurement.
func (w *Watch) Reset() {
	w.readings.Store(0)
	w.gaps.Store(0)
	w.latency.Reset()
}

// WatchResult is what a set of watchers received.
type WatchResult struct {
	// Readings is the total over every watcher.
	Readings int64 `json:"readings"`
	// Gaps counts the live stream's notices that a watcher fell behind.
	Gaps    int64   `json:"gaps"`
	Latency Summary `json:"latency"`
}

// Result returns what was received since the last Reset.
func (w *Watch) Result() WatchResult {
	return WatchResult{Readings: w.readings.Load(), Gaps: w.gaps.Load(), Latency: w.latency.Summary()}
}

// Watchers is a set of connections that feed one Watch.
type Watchers struct {
	Watch
	closers []func()
	wg      sync.WaitGroup
	dropped atomic.Int64
}

// Dropped returns how many watchers lost their connection before Close.
func (ws *Watchers) Dropped() int64 { return ws.dropped.Load() }

// Close closes every connection and waits for the readers. Safe to call
// twice.
func (ws *Watchers) Close() {
	for _, c := range ws.closers {
		c()
	}
	ws.closers = nil
	ws.wg.Wait()
}

// subHandler feeds what an MQTT subscriber receives to a Watch.
type subHandler struct{ w *Watch }

var _ Handler = subHandler{}

// Puback is never called: watchers do not publish.
func (h subHandler) Puback(uint16) {}

// Message records a received reading.
func (h subHandler) Message(_, payload []byte) { h.w.observe(payload, time.Now()) }

// Subscribe connects n MQTT clients that each subscribe to filter at QoS 0:
// the dashboards of a bare broker. username and password may be empty.
func Subscribe(ctx context.Context, addr string, n int, filter, username, password string) (*Watchers, error) {
	ws := &Watchers{}
	for i := range n {
		d := Dialer{Addr: addr, ReadBuffer: 64 << 10}
		c, err := d.Dial(ctx, fmt.Sprintf("bench-watch-%d-%d", time.Now().UnixNano(), i), username, password)
		if err == nil {
			err = c.Subscribe(filter, 0)
			if err != nil {
				c.Close()
			}
		}
		if err != nil {
			ws.Close()
			return nil, err
		}
		ws.closers = append(ws.closers, func() { c.Disconnect() })
		ws.wg.Go(func() {
			if err := c.ReadLoop(subHandler{&ws.Watch}); err != nil {
				ws.dropped.Add(1)
			}
		})
	}
	return ws, nil
}

var (
	kindReading = []byte(`"kind":"reading"`)
	kindGap     = []byte(`"kind":"gap"`)
)

// Dashboards opens n WebSocket clients on a live stream URL (ws://.../api/v1/live?...)
// with the bearer token, as n operators' dashboards would.
func Dashboards(ctx context.Context, url, token string, n int) (*Watchers, error) {
	ws := &Watchers{}
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10}
	for range n {
		conn, resp, err := dialer.DialContext(ctx, url, hdr)
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("load: dashboard: %w", err)
		}
		resp.Body.Close()
		ws.closers = append(ws.closers, func() { conn.Close() })
		ws.wg.Go(func() {
			// One buffer for every message: at 10,000 readings/s to each of
			// several dashboards, an allocation per message would cost the
			// generator CPU that the hub under test then lacks.
			var buf bytes.Buffer
			for {
				_, r, err := conn.NextReader()
				if err == nil {
					buf.Reset()
					_, err = buf.ReadFrom(r)
				}
				if err != nil {
					if !errors.Is(err, net.ErrClosed) && !websocket.IsCloseError(err, websocket.CloseGoingAway) {
						ws.dropped.Add(1)
					}
					return
				}
				b := buf.Bytes()
				switch {
				case bytes.Contains(b, kindReading):
					ws.observe(b, time.Now())
				case bytes.Contains(b, kindGap):
					ws.gaps.Add(1)
				}
			}
		})
	}
	return ws, nil
}
