package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DeleteBefore removes every sample older than cutoff and returns how many
// it removed. It flushes the head first, then deletes whole flushes older
// than cutoff, and rewrites the chunks of a flush that straddles it (late
// or backfilled readings), one flush per transaction so that the writer is
// not held up for long.
func (s *DB) DeleteBefore(cutoff time.Time) (int, error) {
	if err := s.Flush(context.Background()); err != nil {
		return 0, err
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	cut := cutoff.UnixNano()
	var seqs []uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(flushesBucket).ForEach(func(k, v []byte) error {
			if first, _, ok := readRange(v); ok && first < cut {
				seqs = append(seqs, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	}); err != nil {
		return 0, fmt.Errorf("embedded store retention: %w", err)
	}
	total := 0
	for _, seq := range seqs {
		err := s.db.Update(func(tx *bolt.Tx) error {
			n, err := expireFlush(tx, seq, cut)
			total += n
			return err
		})
		if err != nil {
			return total, fmt.Errorf("embedded store retention: %w", err)
		}
	}
	return total, nil
}

// expireFlush removes the samples of one flush older than cut: the whole
// flush when all of them are.
func expireFlush(tx *bolt.Tx, seq uint64, cut int64) (int, error) {
	flushes, chunks := tx.Bucket(flushesBucket), tx.Bucket(chunksBucket)
	rec := flushes.Get(seqKey(seq))
	level := flushLevel(rec)
	_, last, ok := readRange(rec)
	if !ok {
		return 0, nil
	}
	prefix := seqKey(seq)
	removed, first := 0, int64(1<<63-1)
	type rewrite struct{ k, v []byte }
	var rewrites []rewrite
	c := chunks.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); {
		n, cf, cl, body, err := chunkHeader(v)
		if err != nil || cl < cut || last < cut {
			removed += n
			at := bytes.Clone(k)
			if err := c.Delete(); err != nil {
				return removed, err
			}
			k, v = c.Seek(at)
			continue
		}
		if cf < cut {
			var keep []sample
			cur := &cursor{body: body, left: n, cur: sample{t: cf}}
			for cur.next() {
				if cur.cur.t >= cut {
					keep = append(keep, cur.cur)
				}
			}
			removed += n - len(keep)
			rewrites = append(rewrites, rewrite{bytes.Clone(k), encodeChunk(keep)})
			cf = keep[0].t
		}
		first = min(first, cf)
		k, v = c.Next()
	}
	for _, r := range rewrites {
		if err := chunks.Put(r.k, r.v); err != nil {
			return removed, err
		}
	}
	if first > last {
		return removed, flushes.Delete(prefix)
	}
	return removed, flushes.Put(prefix, flushRecord(first, last, level))
}

// Janitor deletes samples older than the retention period, once at start and
// then every interval.
type Janitor struct {
	db        *DB
	retention time.Duration
	every     time.Duration
	log       *slog.Logger
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
}

// NewJanitor returns a janitor for db; retention 0 keeps everything.
func NewJanitor(db *DB, retention time.Duration, log *slog.Logger) *Janitor {
	return &Janitor{db: db, retention: retention, every: min(max(retention/24, time.Minute), time.Hour), log: log}
}

// Start runs the janitor until Stop.
func (j *Janitor) Start(ctx context.Context) {
	if j.retention <= 0 {
		return
	}
	ctx, j.cancel = context.WithCancel(ctx)
	j.wg.Go(func() {
		t := time.NewTicker(j.every)
		defer t.Stop()
		for {
			n, err := j.db.DeleteBefore(time.Now().Add(-j.retention))
			if err != nil {
				j.log.Error("retention", "err", err)
			} else if n > 0 {
				j.log.Info("retention removed old samples", "samples", n, "retention", j.retention)
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	})
}

// Stop stops the janitor. Safe to call twice.
func (j *Janitor) Stop() {
	j.once.Do(func() {
		if j.cancel != nil {
			j.cancel()
		}
		j.wg.Wait()
	})
}
