package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// Compaction keeps the number of flushes, and so the keys a long query
// seeks, logarithmic in the data: each Flush adds a flush of level 0, and
// when a level holds more than fanIn flushes, the oldest fanIn of them are
// merged into one flush of the next level. Levels only fall with the
// sequence number (a merged flush is older than every flush of the level it
// came from), so the flushes of one level are consecutive.
//
// A merge writes each series' merged chunk under the newest flush of the
// group, whose record first takes the time range of the whole group, then
// deletes the others, and only then marks it of the next level. The newest
// sequence number keeps "the later flush wins" true against flushes
// outside the group. It works in transactions of about mergeBatch bytes
// and drops the pages it read from memory after each (release_linux.go);
// stopped half-way, every query still sees each sample (the group's newest
// flush holds a superset of what it merged so far, and wins over what is
// left of the others), and the next merge takes the group again.

const (
	defaultFanIn = 16
	mergeBatch   = 1 << 20
)

var errClosing = errors.New("embedded store closing")

func (s *DB) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

type flushInfo struct {
	seq         uint64
	first, last int64
	level       byte
}

func (s *DB) flushList() ([]flushInfo, error) {
	var out []flushInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(flushesBucket).ForEach(func(k, v []byte) error {
			if first, last, ok := readRange(v); ok {
				out = append(out, flushInfo{seq: binary.BigEndian.Uint64(k), first: first, last: last, level: flushLevel(v)})
			}
			return nil
		})
	})
	return out, err
}

// compact merges until no level holds more than fanIn flushes.
func (s *DB) compact() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	for {
		if s.isClosing() {
			return errClosing
		}
		fl, err := s.flushList()
		if err != nil {
			return err
		}
		group := oldestOverfull(fl, s.fanIn, s.opts.MergeSpan.Nanoseconds())
		if group == nil {
			return nil
		}
		if err := s.merge(group); err != nil {
			return err
		}
		s.merges.Add(1)
	}
}

// oldestOverfull returns the oldest fanIn flushes of the lowest level that
// holds more than fanIn and whose oldest fanIn span at most maxSpan, or
// nil. A level whose oldest flushes would make a longer one is left as it
// is: retention deletes whole flushes, and a flush spanning weeks would
// outlive it by weeks.
func oldestOverfull(fl []flushInfo, fanIn int, maxSpan int64) []flushInfo {
	var byLevel [256][]flushInfo
	for _, f := range fl {
		byLevel[f.level] = append(byLevel[f.level], f)
	}
	for _, l := range byLevel {
		if len(l) <= fanIn {
			continue
		}
		g := l[:fanIn]
		first, last := g[0].first, g[0].last
		for _, f := range g {
			first, last = min(first, f.first), max(last, f.last)
		}
		if last-first <= maxSpan {
			return g
		}
	}
	return nil
}

func (s *DB) merge(group []flushInfo) error {
	newest := group[len(group)-1]
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for _, g := range group {
		first, last = min(first, g.first), max(last, g.last)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(flushesBucket).Put(seqKey(newest.seq), flushRecord(first, last, newest.level))
	}); err != nil {
		return fmt.Errorf("embedded store merge: %w", err)
	}
	var after []byte // the last series merged
	for done := false; !done; {
		if s.isClosing() {
			return errClosing // the group is merged again next time
		}
		type merged struct{ series, chunk []byte }
		var out []merged
		err := s.db.View(func(tx *bolt.Tx) error {
			cs := make([]*seriesCursor, len(group))
			for i, g := range group {
				cs[i] = newSeriesCursor(tx.Bucket(chunksBucket).Cursor(), g.seq, after)
			}
			size := 0
			for size < mergeBatch {
				var next []byte
				for _, c := range cs {
					if c.series != nil && (next == nil || bytes.Compare(c.series, next) < 0) {
						next = c.series
					}
				}
				if next == nil {
					done = true
					return nil
				}
				next = bytes.Clone(next)
				var refs []chunkRef
				for _, c := range cs {
					if bytes.Equal(c.series, next) {
						ref, err := newChunkRef(c.seq, c.value)
						if err != nil {
							return fmt.Errorf("flush %d, series %q: %w", c.seq, next, err)
						}
						refs = append(refs, ref)
						c.advance()
					}
				}
				var samples []sample
				merge(refs, math.MinInt64, math.MaxInt64, func(x sample) { samples = append(samples, x) })
				chunk := encodeChunk(samples)
				out = append(out, merged{next, chunk})
				size += len(chunk)
				after = next
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("embedded store merge: %w", err)
		}
		if err := s.db.Update(func(tx *bolt.Tx) error {
			chunks := tx.Bucket(chunksBucket)
			for _, m := range out {
				if m.chunk == nil {
					continue
				}
				if err := chunks.Put(append(seqKey(newest.seq), m.series...), m.chunk); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("embedded store merge: %w", err)
		}
		s.releaseDuringCompaction() // what this batch read, so a merge does not hold the flushes in memory
	}
	// The merged flushes go one per transaction, and the newest becomes a
	// flush of the next level only after: cut off before, the group is
	// still consecutive at its level and is merged again.
	for _, g := range group[:len(group)-1] {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			if err := deletePrefix(tx.Bucket(chunksBucket), seqKey(g.seq)); err != nil {
				return err
			}
			return tx.Bucket(flushesBucket).Delete(seqKey(g.seq))
		}); err != nil {
			return fmt.Errorf("embedded store merge: %w", err)
		}
		s.releaseDuringCompaction()
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(flushesBucket).Put(seqKey(newest.seq), flushRecord(first, last, newest.level+1))
	})
}

// seriesCursor walks the chunks of one flush in series order.
type seriesCursor struct {
	c             *bolt.Cursor
	seq           uint64
	prefix        []byte
	series, value []byte // nil at the end
}

func newSeriesCursor(c *bolt.Cursor, seq uint64, after []byte) *seriesCursor {
	sc := &seriesCursor{c: c, seq: seq, prefix: seqKey(seq)}
	k, v := c.Seek(append(bytes.Clone(sc.prefix), after...))
	sc.set(k, v)
	if after != nil && bytes.Equal(sc.series, after) {
		sc.advance()
	}
	return sc
}

func (sc *seriesCursor) set(k, v []byte) {
	if k == nil || !bytes.HasPrefix(k, sc.prefix) {
		sc.series, sc.value = nil, nil
		return
	}
	sc.series, sc.value = k[len(sc.prefix):], v
}

func (sc *seriesCursor) advance() { sc.set(sc.c.Next()) }

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
