package store

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DeleteBefore removes every sample older than cutoff and returns how many
// it removed. It works one device per transaction so that writers are not
// held up for long.
func (s *DB) DeleteBefore(cutoff time.Time) (int, error) {
	var devices [][]byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(seriesBucket).ForEachBucket(func(k []byte) error {
			devices = append(devices, bytes.Clone(k))
			return nil
		})
	}); err != nil {
		return 0, fmt.Errorf("embedded store retention: %w", err)
	}
	total := 0
	for _, dev := range devices {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(seriesBucket).Bucket(dev)
			if b == nil {
				return nil
			}
			for _, f := range fieldNames(b) {
				hi := appendKey(nil, f, cutoff)
				c := b.Cursor()
				for k, _ := c.Seek(append([]byte(f), 0)); k != nil && bytes.Compare(k, hi) < 0; k, _ = c.Seek(append([]byte(f), 0)) {
					if err := c.Delete(); err != nil {
						return err
					}
					total++
				}
			}
			return nil
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
