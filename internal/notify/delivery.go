package notify

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// append files deliveries in each webhook's outbox, dropping the oldest
// when an outbox would exceed MaxPending. Deliveries for a webhook deleted
// or disabled meanwhile are not filed.
func (d *Dispatcher) append(add map[*hook][]delivery) error {
	type counts struct{ added, dropped int }
	n := map[*hook]counts{}
	pending := map[*hook]int{}
	d.mu.Lock()
	for h := range add {
		pending[h] = h.w.Status.Pending
	}
	d.mu.Unlock()
	err := d.db.Update(func(tx *bolt.Tx) error {
		wb, ob := tx.Bucket(webhooksBucket), tx.Bucket(outboxBucket)
		for h, dls := range add {
			var cur stored
			v := wb.Get([]byte(h.w.ID))
			if v == nil || json.Unmarshal(v, &cur) != nil || cur.Disabled {
				continue
			}
			b, err := ob.CreateBucketIfNotExists([]byte(h.w.ID))
			if err != nil {
				return err
			}
			c := counts{}
			for _, dl := range dls {
				seq, _ := b.NextSequence()
				v, err := json.Marshal(&dl)
				if err != nil {
					return err
				}
				if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
					return err
				}
				c.added++
			}
			if pending[h]+c.added > d.cfg.MaxPending {
				for over := countKeys(b) - d.cfg.MaxPending; over > 0; over-- {
					k, _ := b.Cursor().First()
					if err := b.Delete(k); err != nil {
						return err
					}
					c.dropped++
				}
			}
			n[h] = c
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("file webhook deliveries: %w", err)
	}
	d.mu.Lock()
	for h, c := range n {
		h.w.Status.Pending += c.added - c.dropped
		h.w.Status.Dropped += uint64(c.dropped)
		d.metrics.overflow.Add(float64(c.dropped))
	}
	d.mu.Unlock()
	return nil
}

// countKeys counts a bucket's keys; Stats does not see the changes of the
// transaction in progress.
func countKeys(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// head returns the oldest delivery of a webhook's outbox.
func (d *Dispatcher) head(id string) (key []byte, dl delivery, ok bool, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(outboxBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		k, v := b.Cursor().First()
		if k == nil {
			return nil
		}
		key, ok = bytes.Clone(k), true
		return json.Unmarshal(v, &dl)
	})
	return key, dl, ok, err
}

// work delivers a webhook's outbox, oldest first, until ctx ends or the
// webhook is disabled.
func (d *Dispatcher) work(ctx context.Context, h *hook) {
	d.mu.Lock()
	id, url, secret := h.w.ID, h.w.URL, h.secret
	d.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(dur time.Duration) bool {
		timer.Reset(dur)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	for {
		key, dl, ok, err := d.head(id)
		switch {
		case err != nil && key == nil:
			d.log.Error("webhook outbox unreadable", "webhook_id", id, "err", err)
			if !wait(d.cfg.RetryMax) {
				return
			}
			continue
		case err != nil:
			// An unreadable delivery would block the queue forever.
			d.log.Error("webhook delivery unreadable: dropped", "webhook_id", id, "err", err)
			d.finish(h, key, nil, 0, nil, time.Now())
			continue
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		now := time.Now()
		if now.Sub(dl.CreatedAt) > d.cfg.MaxAge {
			d.finish(h, key, nil, 0, nil, now)
			continue
		}
		if dl.NextAt.After(now) {
			if !wait(dl.NextAt.Sub(now)) {
				return
			}
			continue
		}
		status, err := d.send(ctx, url, secret, &dl)
		if ctx.Err() != nil {
			return // stopping: the attempt does not count, the delivery stays
		}
		if d.finish(h, key, &dl, status, err, time.Now()) {
			return
		}
	}
}

// send makes one attempt.
func (d *Dispatcher) send(ctx context.Context, url, secret string, dl *delivery) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(dl.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Telehub-Webhook/1")
	req.Header.Set("Telehub-Event-Id", dl.EventID)
	req.Header.Set("Telehub-Event", dl.Kind)
	req.Header.Set("Telehub-Delivery-Attempt", strconv.Itoa(dl.Attempts+1))
	req.Header.Set(SignatureHeader, Sign(secret, time.Now(), dl.Body))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// backoff is the wait after the n-th failed attempt: exponential from
// RetryMin, capped at RetryMax, with jitter in its upper half so that
// deliveries that failed together do not retry together.
func backoff(cfg Config, n int) time.Duration {
	d := cfg.RetryMin
	for i := 1; i < n && d < cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// finish records an attempt (dl nil: the delivery is dropped unattempted,
// expired or unreadable) and writes the outcome with the webhook's status
// in one transaction. It reports whether the webhook was disabled.
func (d *Dispatcher) finish(h *hook, key []byte, dl *delivery, status int, sendErr error, now time.Time) (disabled bool) {
	t := now.UTC()
	d.mu.Lock()
	if d.hooks[h.w.ID] != h {
		d.mu.Unlock()
		return true // deleted meanwhile
	}
	st := &h.w.Status
	remove := true
	var reason string
	switch {
	case dl == nil:
		st.Dropped++
		d.metrics.expired.Inc()
	case sendErr == nil:
		st.Delivered++
		st.LastAttemptAt, st.LastStatus, st.LastError, st.LastSuccessAt, st.FailingSince = &t, status, "", &t, nil
		d.metrics.delivered.Inc()
	default:
		remove = false
		st.FailedAttempts++
		st.LastAttemptAt, st.LastStatus, st.LastError = &t, status, sendErr.Error()
		if st.FailingSince == nil {
			st.FailingSince = &t
		}
		d.metrics.failed.Inc()
		dl.Attempts++
		dl.NextAt = now.Add(backoff(d.cfg, dl.Attempts))
		dl.LastError = sendErr.Error()
		switch {
		case status == http.StatusGone:
			reason = "the receiver answered 410 Gone"
		case now.Sub(*st.FailingSince) >= d.cfg.DisableAfter:
			reason = fmt.Sprintf("every attempt failed since %s; last: %s", st.FailingSince.Format(time.RFC3339), sendErr)
		}
	}
	if reason != "" {
		h.w.Disabled, h.w.DisabledReason, h.w.DisabledAt = true, reason, &t
		st.Dropped += uint64(st.Pending)
		d.metrics.droppedDisable.Add(float64(st.Pending))
		st.Pending = 0
		h.cancel = nil
		d.log.Warn("webhook disabled", "webhook_id", h.w.ID, "reason", reason)
	}
	snap := &hook{w: h.w.clone(), secret: h.secret}
	d.mu.Unlock()

	// The delivery may have left the outbox meanwhile (dropped because the
	// outbox overflowed): then there is nothing to remove or to put back.
	existed := false
	err := d.db.Update(func(tx *bolt.Tx) error {
		existed = false
		ob := tx.Bucket(outboxBucket)
		if reason != "" {
			if err := ob.DeleteBucket([]byte(snap.w.ID)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
		} else if b := ob.Bucket([]byte(snap.w.ID)); b != nil && key != nil && b.Get(key) != nil {
			existed = true
			if remove {
				if err := b.Delete(key); err != nil {
					return err
				}
			} else {
				v, err := json.Marshal(dl)
				if err != nil {
					return err
				}
				if err := b.Put(key, v); err != nil {
					return err
				}
			}
		}
		return putWebhook(tx, snap)
	})
	if err != nil {
		// The delivery stays as it was: at worst it is sent again.
		d.log.Error("webhook delivery outcome not stored", "webhook_id", snap.w.ID, "err", err)
	}
	if err == nil && existed && remove {
		d.mu.Lock()
		h.w.Status.Pending--
		d.mu.Unlock()
	}
	return reason != ""
}
