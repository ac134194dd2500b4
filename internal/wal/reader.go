package wal

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
)

// Reader reads committed (durable) records in order, for one consumer. It
// is not safe for concurrent use.
type Reader struct {
	l    *Log
	name string
	next uint64 // offset of the next record to return
	seg  uint64 // first offset of the open segment
	f    *os.File
	br   *bufio.Reader
	pos  uint64 // offset of the next record in br
	bufs [][]byte
}

// NewReader returns the default consumer's reader; see Consumer.
func (l *Log) NewReader() *Reader { return l.Consumer(DefaultConsumer) }

// Consumer returns the reader of a consumer named in Options.Consumers,
// positioned at its checkpoint. Segments are deleted only when every
// consumer is past them, and the log's bound counts what the slowest one has
// not consumed, so a stalled consumer (an uplink that is down) pushes back
// on devices instead of losing data.
func (l *Log) Consumer(name string) *Reader {
	return &Reader{l: l, name: name, next: l.register(name)}
}

// ReadFrom returns a reader that starts at offset and belongs to no
// consumer: it moves no checkpoint (Checkpoint does nothing). For inspecting the
// log, such as counting a backlog at start.
func (l *Log) ReadFrom(offset uint64) *Reader { return &Reader{l: l, next: offset} }

// Checkpoint records that the consumer has consumed every record before
// offset: its checkpoint moves there (never back), and segments every
// consumer is past are deleted.
func (r *Reader) Checkpoint(offset uint64) error { return r.l.checkpoint(r.name, offset) }

// Next returns the offset of the next record the reader will return.
func (r *Reader) Next() uint64 { return r.next }

// Available reports whether a committed record is ready to be read.
func (r *Reader) Available() bool { return r.next < r.l.committed.Load() }

// Changed returns a channel closed when more records are committed. Check
// Available after taking it, so that no record is missed in between.
func (r *Reader) Changed() <-chan struct{} { return r.l.changed() }

// Wait blocks until a committed record is ready or ctx ends.
func (r *Reader) Wait(ctx context.Context) error {
	for {
		ch := r.l.changed()
		if r.Available() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Read returns up to max committed records without blocking, with the offset
// of the first. The returned slices are valid until the next call to Read.
func (r *Reader) Read(max int) (recs [][]byte, first uint64, err error) {
	first = r.next
	end := r.l.committed.Load()
	for len(recs) < max && r.next < end {
		if err := r.position(); err != nil {
			return recs, first, err
		}
		i := len(recs)
		if i >= len(r.bufs) {
			r.bufs = append(r.bufs, nil)
		}
		var rec []byte
		rec, r.bufs[i], err = readRecord(r.br, r.bufs[i])
		if err == io.EOF {
			// End of this segment: the next record is in the following one.
			r.closeSeg()
			r.seg = r.next
			if err := r.open(r.next); err != nil {
				return recs, first, err
			}
			continue
		}
		if err != nil {
			return recs, first, fmt.Errorf("wal: read offset %d: %w", r.next, err)
		}
		recs = append(recs, rec)
		r.next++
		r.pos++
	}
	return recs, first, nil
}

// position makes sure the open segment is the one holding r.next.
func (r *Reader) position() error {
	if r.f != nil && r.pos == r.next {
		return nil
	}
	r.closeSeg()
	r.l.mu.Lock()
	var first uint64
	var path string
	for _, s := range r.l.segs {
		if s.first <= r.next {
			first, path = s.first, s.path
		}
	}
	r.l.mu.Unlock()
	if path == "" {
		return fmt.Errorf("wal: offset %d is no longer on disk", r.next)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("wal: open segment: %w", err)
	}
	r.f, r.br, r.seg, r.pos = f, bufio.NewReaderSize(f, 256<<10), first, first
	var buf []byte
	for r.pos < r.next {
		if _, buf, err = readRecord(r.br, buf); err != nil {
			return fmt.Errorf("wal: skip to offset %d: %w", r.next, err)
		}
		r.pos++
	}
	return nil
}

// open opens the segment that begins at first.
func (r *Reader) open(first uint64) error {
	r.l.mu.Lock()
	var path string
	for _, s := range r.l.segs {
		if s.first == first {
			path = s.path
		}
	}
	r.l.mu.Unlock()
	if path == "" {
		return fmt.Errorf("wal: no segment begins at offset %d", first)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("wal: open segment: %w", err)
	}
	r.f, r.br, r.seg, r.pos = f, bufio.NewReaderSize(f, 256<<10), first, first
	return nil
}

func (r *Reader) closeSeg() {
	if r.f != nil {
		r.f.Close()
		r.f, r.br = nil, nil
	}
}

// SkipSegment gives up on the rest of the segment holding the next record
// (after a corruption that cannot be read past) and moves to the start of
// the following segment. It returns how many records were skipped, 0 when
// there is no following segment.
func (r *Reader) SkipSegment() uint64 {
	r.l.mu.Lock()
	var next uint64
	for _, s := range r.l.segs {
		if s.first > r.next {
			next = s.first
			break
		}
	}
	r.l.mu.Unlock()
	if next == 0 {
		return 0
	}
	r.closeSeg()
	skipped := next - r.next
	r.next = next
	return skipped
}

// Close releases the reader's open file.
func (r *Reader) Close() { r.closeSeg() }
