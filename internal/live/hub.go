// Package live is the hub's live fan-out: a bounded ring of recent messages,
// each with a sequence number, that any number of subscribers read at their
// own pace. Publishing never waits for a subscriber; a subscriber that falls
// further behind than the ring holds is told so and skips ahead.
package live

import (
	"sync"
	"sync/atomic"
	"time"
)

// Message is one event of the live stream. Body is a JSON object without the
// sequence number; Frame adds it.
type Message struct {
	Seq      uint64
	Kind     string
	DeviceID string
	// Body may be nil when Data is a LazyBody: Payload encodes it then.
	Body []byte
	// Data is the message in structured form, for consumers that filter or
	// merge it (for readings, an *ingest.LiveReading); it may be nil.
	Data any
	// At is when the message was published, in Unix nanoseconds (set by
	// Publish), for the stream delay.
	At int64
}

// LazyBody is Data that encodes the message's body when it is first needed,
// once for all readers, so that publishing costs no encoding when nobody
// reads. Body must be safe for concurrent use.
type LazyBody interface {
	Body() []byte
}

// Payload returns the message's body: Body, or the body its Data encodes.
func (m Message) Payload() []byte {
	if m.Body == nil {
		if l, ok := m.Data.(LazyBody); ok {
			return l.Body()
		}
	}
	return m.Body
}

// AppendFrame appends the JSON of m with its seq as the first member.
func (m Message) AppendFrame(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = appendUint(b, m.Seq)
	if body := m.Payload(); len(body) > 2 {
		b = append(b, ',')
		return append(b, body[1:]...)
	}
	return append(b, '}')
}

func appendUint(b []byte, v uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// Hub holds the ring. Safe for concurrent use.
type Hub struct {
	mu     sync.RWMutex
	ring   []Message
	first  uint64 // seq of the first message of this run
	next   uint64 // seq of the next message
	notify chan struct{}
	// watched is set when Changed hands out notify, so Publish replaces it
	// only when someone may be waiting on it.
	watched atomic.Bool
}

// New returns a hub that keeps the last size messages for replay; the first
// message has seq 1.
func New(size int) *Hub { return NewAt(size, 1) }

// NewAt returns a hub whose first message has seq first. The hub starts
// with the current time in microseconds, so that seq keeps growing across
// restarts (as long as it averages under a million messages a second) and a
// client resuming with a seq of an earlier run is recognised.
func NewAt(size int, first uint64) *Hub {
	size = max(size, 16)
	first = max(first, 1)
	return &Hub{ring: make([]Message, size), first: first, next: first, notify: make(chan struct{})}
}

// First returns the seq of the first message of this run.
func (h *Hub) First() uint64 { return h.first }

// Publish appends messages, assigning their sequence numbers, and wakes the
// readers. It never blocks on a reader.
func (h *Hub) Publish(msgs ...Message) {
	if len(msgs) == 0 {
		return
	}
	now := time.Now().UnixNano()
	h.mu.Lock()
	for _, m := range msgs {
		m.Seq, m.At = h.next, now
		h.ring[h.next%uint64(len(h.ring))] = m
		h.next++
	}
	// Only a channel someone asked for needs closing and replacing: with
	// no reader waiting, publishing allocates nothing for the wake-up.
	var ch chan struct{}
	if h.watched.Swap(false) {
		ch = h.notify
		h.notify = make(chan struct{})
	}
	h.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// Last returns the seq of the newest message, First()-1 if there is none.
func (h *Hub) Last() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.next - 1
}

// Changed returns a channel that is closed when a message is published.
func (h *Hub) Changed() <-chan struct{} {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.watched.Store(true) // under the read lock: never concurrent with Publish's swap
	return h.notify
}

// Read appends to buf up to max messages with seq greater than after. When
// messages after `after` have already left the ring, missed is the count
// lost and reading resumes at the oldest message held.
func (h *Hub) Read(after uint64, buf []Message, max int) (msgs []Message, missed uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	oldest := h.first
	if h.next-h.first > uint64(len(h.ring)) {
		oldest = h.next - uint64(len(h.ring))
	}
	from := after + 1
	if from < oldest {
		missed = oldest - from
		from = oldest
	}
	for s := from; s < h.next && len(buf) < max; s++ {
		buf = append(buf, h.ring[s%uint64(len(h.ring))])
	}
	return buf, missed
}
