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

// DeleteBefore removes the flushes whose samples are all older than cutoff
// and returns how many samples went with them. A flush that straddles the
// cutoff stays whole until its newest sample is older too, as InfluxDB keeps
// a shard group until all of it has expired: rewriting it every time the
// cutoff moves would cost the size of the flush each time. Merging keeps
// that extra bounded (Options.MergeSpan). It flushes the head first and
// works one flush per transaction, so the writer is not held up for long.
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
			if _, last, ok := readRange(v); ok && last < cut {
				seqs = append(seqs, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	}); err != nil {
		return 0, fmt.Errorf("embedded store retention: %w", err)
	}
	total := 0
	if len(seqs) > 0 {
		defer s.startCompaction() // which releases the pages read (after compactMu is free)
	}
	for _, seq := range seqs {
		err := s.db.Update(func(tx *bolt.Tx) error {
			chunks := tx.Bucket(chunksBucket)
			prefix := seqKey(seq)
			c := chunks.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if n, _, _, _, err := chunkHeader(v); err == nil {
					total += n
				}
			}
			if err := deletePrefix(chunks, prefix); err != nil {
				return err
			}
			return tx.Bucket(flushesBucket).Delete(prefix)
		})
		if err != nil {
			return total, fmt.Errorf("embedded store retention: %w", err)
		}
	}
	return total, nil
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
