package store

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"math"
	"slices"

	"github.com/telehub/telehub/ingest"
)

// A chunk is the samples of one series (one field of one device) in time
// order, each time at most once:
//
//	uvarint count, varint first time, varint last time (Unix ns), then per
//	sample: uvarint time delta from the previous sample (the first: 0), a
//	kind byte, and the value: 8 bytes big-endian for a number, 1 for a
//	bool, uvarint length and bytes for a string.
//
// The header lets a query skip a chunk outside its range without decoding
// it. The head builds chunks by appending samples as they come, so a series
// whose samples arrive in time order (the usual case) is flushed as it is.

// series is one series in the head: its samples encoded as a chunk body.
// A sample older than the newest so far (or of the same time) is written
// with a zero delta and its time in full, and marks the series for sorting
// before the flush.
type series struct {
	body         []byte
	n            int
	t0           int64 // time of the first sample added
	first, last  int64 // oldest and newest time
	needsSorting bool
}

func (s *series) add(t int64, v ingest.Value) {
	switch {
	case s.n == 0:
		s.t0, s.first, s.last = t, t, t
		s.body = binary.AppendUvarint(s.body, 0)
	case t > s.last:
		s.body = binary.AppendUvarint(s.body, uint64(t-s.last))
		s.last = t
	default:
		s.needsSorting = true
		s.body = binary.AppendUvarint(s.body, 0)
		s.body = binary.AppendVarint(s.body, t)
		s.first = min(s.first, t)
	}
	s.body = appendValue(s.body, v)
	s.n++
}

// chunk returns the series as a chunk, sorted and with one sample per time
// (the last added wins).
func (s *series) chunk() []byte {
	if s.needsSorting {
		return encodeChunk(s.samples())
	}
	b := make([]byte, 0, len(s.body)+3*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, uint64(s.n))
	b = binary.AppendVarint(b, s.first)
	b = binary.AppendVarint(b, s.last)
	return append(b, s.body...)
}

// samples decodes the head body, sorted and one per time.
func (s *series) samples() []sample {
	out := make([]sample, 0, s.n)
	b, last := s.body, s.t0
	for i := range s.n {
		d, n := binary.Uvarint(b)
		b = b[n:]
		t := last + int64(d)
		if d == 0 && i > 0 {
			t, n = binary.Varint(b)
			b = b[n:]
		}
		last = max(last, t)
		var v ingest.Value
		v, b, _ = readValue(b) // the head wrote it: well-formed
		out = append(out, sample{t, v})
	}
	return sortDedupe(out)
}

type sample struct {
	t int64
	v ingest.Value
}

// sortDedupe sorts samples by time, keeping the last of equal times.
func sortDedupe(s []sample) []sample {
	slices.SortStableFunc(s, func(a, b sample) int { return cmp.Compare(a.t, b.t) })
	out := s[:0]
	for i, x := range s {
		if i+1 < len(s) && s[i+1].t == x.t {
			continue
		}
		out = append(out, x)
	}
	return out
}

func encodeChunk(s []sample) []byte {
	if len(s) == 0 {
		return nil
	}
	b := binary.AppendUvarint(nil, uint64(len(s)))
	b = binary.AppendVarint(b, s[0].t)
	b = binary.AppendVarint(b, s[len(s)-1].t)
	prev := s[0].t
	for _, x := range s {
		b = binary.AppendUvarint(b, uint64(x.t-prev))
		b = appendValue(b, x.v)
		prev = x.t
	}
	return b
}

var errCorrupt = errors.New("corrupt chunk")

// chunkHeader returns a chunk's count and time range, and its body.
func chunkHeader(c []byte) (n int, first, last int64, body []byte, err error) {
	u, k := binary.Uvarint(c)
	if k <= 0 || u > math.MaxInt32 {
		return 0, 0, 0, nil, errCorrupt
	}
	c = c[k:]
	if first, k = binary.Varint(c); k <= 0 {
		return 0, 0, 0, nil, errCorrupt
	}
	c = c[k:]
	if last, k = binary.Varint(c); k <= 0 {
		return 0, 0, 0, nil, errCorrupt
	}
	return int(u), first, last, c[k:], nil
}

func appendValue(b []byte, v ingest.Value) []byte {
	b = append(b, byte(v.Kind))
	switch v.Kind {
	case ingest.KindNumber:
		return binary.BigEndian.AppendUint64(b, math.Float64bits(v.Num))
	case ingest.KindBool:
		if v.Bool {
			return append(b, 1)
		}
		return append(b, 0)
	default:
		b = binary.AppendUvarint(b, uint64(len(v.Str)))
		return append(b, v.Str...)
	}
}

func readValue(b []byte) (ingest.Value, []byte, error) {
	if len(b) < 1 {
		return ingest.Value{}, nil, errCorrupt
	}
	k, b := ingest.Kind(b[0]), b[1:]
	switch k {
	case ingest.KindNumber:
		if len(b) < 8 {
			return ingest.Value{}, nil, errCorrupt
		}
		return ingest.Number(math.Float64frombits(binary.BigEndian.Uint64(b))), b[8:], nil
	case ingest.KindBool:
		if len(b) < 1 {
			return ingest.Value{}, nil, errCorrupt
		}
		return ingest.Bool(b[0] == 1), b[1:], nil
	case ingest.KindString:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return ingest.Value{}, nil, errCorrupt
		}
		return ingest.String(string(b[n : n+int(l)])), b[n+int(l):], nil
	}
	return ingest.Value{}, nil, errCorrupt
}

// cursor reads a sorted chunk one sample at a time.
type cursor struct {
	body []byte
	left int
	seq  uint64 // the flush that wrote it: of equal times, the later flush wins
	cur  sample
}

// next moves to the next sample; false at the end or on a corrupt chunk.
func (c *cursor) next() bool {
	if c.left == 0 {
		return false
	}
	d, n := binary.Uvarint(c.body)
	if n <= 0 {
		return false
	}
	v, rest, err := readValue(c.body[n:])
	if err != nil {
		return false
	}
	c.body, c.left = rest, c.left-1
	c.cur = sample{c.cur.t + int64(d), v}
	return true
}

// chunkRef is a chunk found for a query.
type chunkRef struct {
	seq         uint64
	first, last int64
	n           int
	body        []byte
}

func newChunkRef(seq uint64, c []byte) (chunkRef, error) {
	n, first, last, body, err := chunkHeader(c)
	return chunkRef{seq: seq, first: first, last: last, n: n, body: body}, err
}

// merge calls emit with the samples of the chunks with from <= t < to in
// time order; of samples with equal times, only the one of the latest flush.
// Chunks are opened as the sweep reaches their first time, so at most the
// chunks that overlap in time are open at once.
func merge(chunks []chunkRef, from, to int64, emit func(sample)) {
	slices.SortFunc(chunks, func(a, b chunkRef) int { return cmp.Compare(a.first, b.first) })
	var h cursorHeap
	var pending sample
	have := false
	i := 0
	for {
		for i < len(chunks) && (len(h) == 0 || chunks[i].first <= h[0].cur.t) {
			c := &cursor{body: chunks[i].body, left: chunks[i].n, seq: chunks[i].seq, cur: sample{t: chunks[i].first}}
			i++
			if c.next() {
				heap.Push(&h, c)
			}
		}
		if len(h) == 0 {
			break
		}
		c := h[0]
		s := c.cur
		if c.next() {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
		if s.t < from || s.t >= to {
			continue
		}
		if have && pending.t != s.t {
			emit(pending)
		}
		pending, have = s, true // equal times come in flush order: the last one stays
	}
	if have {
		emit(pending)
	}
}

type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	if h[i].cur.t != h[j].cur.t {
		return h[i].cur.t < h[j].cur.t
	}
	return h[i].seq < h[j].seq
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
