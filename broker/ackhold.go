package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telehub/telehub/internal/wal"
)

const (
	// maxHolds bounds the publishes of one connection waiting for the log:
	// past it, the client's read goroutine waits for its own publish's
	// commit, as if there were no ackHold, so a client that outruns the
	// disk is slowed to its pace.
	maxHolds = 1024
	// closeGrace is how long Close waits for the held bytes to be let out
	// (their commits are normally a few milliseconds away).
	closeGrace = time.Second
	// maxHeldBytes bounds the bytes held for one connection: past it, Write
	// waits until the flusher has written some out, as a full socket buffer
	// would make it wait.
	maxHeldBytes = 1 << 20
)

// ackHold holds back what the broker writes to a client until the durable
// log has committed every reading the client published before the write.
// So a PUBACK is never on the wire before its reading is on disk, yet the
// client's read goroutine does not wait for the fsync: the broker reads the
// client's next publish at once, a device can have many publishes in
// flight, and the PUBACKs that one sync of the log releases leave in one write.
// Holding the whole outbound stream, not just PUBACKs, keeps the order of
// everything the client is sent (MQTT requires PUBACKs in the order of
// their PUBLISHes).
//
// The broker's writes to a client are serialised by mochi; hold is called
// on the client's read goroutine. A goroutine (the flusher) runs only
// while something is held, so idle connections cost none.
type ackHold struct {
	net.Conn

	mu       sync.Mutex
	pending  []heldCommit // registered and not yet seen committed, in order
	held     uint64       // holds registered since the connection opened
	waited   uint64       // of those, the first waited are committed
	buf      []byte       // bytes written while something was held
	marks    []holdMark   // the writes in buf, in order
	flushing bool         // the flusher is running
	idle     chan struct{}
	drained  chan struct{} // closed and replaced whenever the flusher writes
	err      error         // the connection failed or closed: writes fail

	wmu sync.Mutex // serialises writes to the connection
	out []byte     // the flusher's write buffer, reused
	wg  sync.WaitGroup

	// The client's QoS 1 and 2 publishes not yet answered on the wire, for
	// the MQTT 5 receive maximum (conform.go): admit counts a publish in,
	// and every PUBACK, PUBCOMP or refusing PUBREC counts one out just
	// before its bytes are written. Counted only once counting is on.
	counting atomic.Bool
	unacked  atomic.Int32

	// latency observes, once per held commit (the publishes of one group
	// commit on this connection), the time from its first publish's hold
	// to its release; nil: not observed.
	latency prometheus.Observer
}

// heldCommit is a commit and how many holds it stands for: the holds of
// appends in one sync of the log are merged.
type heldCommit struct {
	c  wal.Commit
	n  uint64
	at time.Time // the first hold
}

// holdMark is where a write into buf ends and how many holds it waits for.
type holdMark struct {
	end  int
	need uint64
}

var _ net.Conn = (*ackHold)(nil)

func newAckHold(c net.Conn, latency prometheus.Observer) *ackHold {
	return &ackHold{Conn: c, latency: latency}
}

// hold makes the connection's next writes wait for c. Past maxHolds it
// waits for c itself and returns its error.
func (a *ackHold) hold(c wal.Commit) error {
	a.mu.Lock()
	if len(a.pending) >= maxHolds {
		a.mu.Unlock()
		at := time.Now()
		_, err := c.Wait()
		if a.latency != nil && err == nil {
			a.latency.Observe(time.Since(at).Seconds())
		}
		return err
	}
	if k := len(a.pending) - 1; k >= 0 && a.pending[k].c.Same(c) {
		a.pending[k].n++ // the later append's commit covers both
	} else {
		a.pending = append(a.pending, heldCommit{c: c, n: 1, at: time.Now()})
	}
	a.held++
	a.mu.Unlock()
	return nil
}

// Write sends b at once when nothing is held, else queues it behind the
// holds registered so far and returns.
func (a *ackHold) Write(b []byte) (int, error) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return 0, a.err
	}
	if !a.flushing && a.waited == a.held {
		a.wmu.Lock()
		a.mu.Unlock()
		defer a.wmu.Unlock()
		a.sent(b)
		return a.Conn.Write(b)
	}
	for a.flushing && len(a.buf) >= maxHeldBytes {
		drained := a.drained
		a.mu.Unlock()
		<-drained
		a.mu.Lock()
		if a.err != nil {
			a.mu.Unlock()
			return 0, a.err
		}
	}
	a.buf = append(a.buf, b...)
	a.marks = append(a.marks, holdMark{end: len(a.buf), need: a.held})
	if !a.flushing {
		a.flushing = true
		a.idle, a.drained = make(chan struct{}), make(chan struct{})
		a.wg.Go(a.flush)
	}
	a.mu.Unlock()
	return len(b), nil
}

// flush waits for the holds in order and writes out what each releases,
// until nothing is held.
func (a *ackHold) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer func() {
		a.flushing = false
		close(a.idle)
		close(a.drained)
	}()
	for a.err == nil {
		// The writes whose holds are all committed go out in one write.
		n, end := 0, 0
		for n < len(a.marks) && a.marks[n].need <= a.waited {
			end = a.marks[n].end
			n++
		}
		if end > 0 {
			a.out = append(a.out[:0], a.buf[:end]...)
			a.buf = a.buf[:copy(a.buf, a.buf[end:])]
			a.marks = a.marks[:copy(a.marks, a.marks[n:])]
			for i := range a.marks {
				a.marks[i].end -= end
			}
			a.wmu.Lock()
			a.mu.Unlock()
			a.sent(a.out)
			_, err := a.Conn.Write(a.out)
			a.wmu.Unlock()
			a.mu.Lock()
			if err != nil {
				a.fail(err)
			}
			close(a.drained)
			a.drained = make(chan struct{})
			continue
		}
		if len(a.pending) == 0 {
			return // every write is out: every need <= held == waited
		}
		// Wait for the oldest hold, then take those committed with it.
		c := a.pending[0].c
		a.mu.Unlock()
		_, err := c.Wait()
		a.mu.Lock()
		a.pop()
		for err == nil && len(a.pending) > 0 {
			var done bool
			if done, err = a.pending[0].c.TryWait(); !done {
				break
			}
			a.pop()
		}
		if err != nil {
			// The reading is not on disk: its PUBACK must not be sent.
			// Closing the connection makes the client send it again.
			a.fail(fmt.Errorf("reading not made durable: %w", err))
			a.mu.Unlock()
			a.Conn.Close()
			a.mu.Lock()
		}
	}
}

// pop drops the oldest hold, which is committed. a.mu is held.
func (a *ackHold) pop() {
	if a.latency != nil {
		a.latency.Observe(time.Since(a.pending[0].at).Seconds())
	}
	a.waited += a.pending[0].n
	a.pending[0] = heldCommit{}
	a.pending = a.pending[1:]
	if len(a.pending) == 0 {
		a.pending = a.pending[:0:0]
	}
}

// fail makes the connection unusable and drops what is held. a.mu is held.
func (a *ackHold) fail(err error) {
	if a.err == nil {
		a.err = err
	}
	a.buf, a.marks = nil, nil
}

// Close lets the held bytes out (waiting at most closeGrace for their
// commits), then closes the connection. Safe to call twice.
func (a *ackHold) Close() error {
	a.mu.Lock()
	idle, flushing := a.idle, a.flushing && a.err == nil // failed or aborted: nothing held is written any more
	a.mu.Unlock()
	if flushing {
		t := time.NewTimer(closeGrace)
		select {
		case <-idle:
		case <-t.C:
		}
		t.Stop()
	}
	a.mu.Lock()
	a.fail(net.ErrClosed)
	a.mu.Unlock()
	err := a.Conn.Close()
	a.wg.Wait()
	return err
}

// countAcks starts counting the client's unanswered publishes.
func (a *ackHold) countAcks() { a.counting.Store(true) }

// admit counts in a QoS 1 or 2 publish just read from the client, unless
// the client already has max unanswered ones: then it reports false. Called
// on the client's read goroutine.
func (a *ackHold) admit(max int32) bool {
	if !a.counting.Load() {
		return true
	}
	if a.unacked.Load() >= max {
		return false
	}
	a.unacked.Add(1)
	return true
}

// sent counts out the publishes that the acknowledgements in b answer. b
// is whole packets, as mochi writes them. It runs before b is written, so a
// client that reads an acknowledgement and publishes again is never counted
// over its limit.
func (a *ackHold) sent(b []byte) {
	if !a.counting.Load() {
		return
	}
	n := answers(b)
	for n > 0 {
		v := a.unacked.Load()
		if a.unacked.CompareAndSwap(v, max(v-n, 0)) { // a PUBCOMP for a flow of an earlier connection counts nothing
			return
		}
	}
}

// answers counts the packets in b that end a client's QoS 1 or 2 publish
// for its receive maximum: PUBACK, PUBCOMP, and PUBREC with a reason code
// of 0x80 or more [MQTT-4.9.0-2].
func answers(b []byte) int32 {
	var n int32
	for len(b) >= 2 {
		typ := b[0] >> 4
		rem, k := 0, 1
		for shift := 0; ; shift += 7 {
			if k >= len(b) || shift > 21 {
				return n
			}
			c := b[k]
			k++
			rem |= int(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
		}
		body := b[k:]
		if rem > len(body) {
			return n
		}
		switch typ {
		case packets.Puback, packets.Pubcomp:
			n++
		case packets.Pubrec:
			if rem >= 3 && body[2] >= packets.ErrUnspecifiedError.Code {
				n++
			}
		}
		b = body[rem:]
	}
	return n
}

// errAborted fails the writes to a connection that is being disconnected.
var errAborted = errors.New("connection aborted")

// abort drops what is held and writes b (a DISCONNECT, or nothing) as the
// connection's last bytes: the client is being disconnected, and what was
// held for it would come after.
func (a *ackHold) abort(b []byte) {
	a.mu.Lock()
	a.fail(errAborted)
	a.wmu.Lock()
	a.mu.Unlock()
	defer a.wmu.Unlock()
	if len(b) > 0 {
		a.Conn.Write(b)
	}
}

// ConnectionState is the TLS state of the connection (empty when it is not
// TLS), for the mTLS identity check.
func (a *ackHold) ConnectionState() tls.ConnectionState {
	if c, ok := a.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return c.ConnectionState()
	}
	return tls.ConnectionState{}
}
