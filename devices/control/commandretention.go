package control

// How commands leave: the expiry order of pending commands, the pruning of
// final ones past the retention, and the forgetting of deleted devices'
// commands.

import (
	"time"
)

// Forget drops the commands of a deleted device: pending ones fail ("the
// device was deleted", on the live stream), then all are deleted, so that a
// new device under the same ID inherits nothing. It does not block.
func (c *Commands) Forget(deviceID string) {
	c.wakeMu.Lock()
	c.forget[deviceID] = struct{}{}
	c.wakeMu.Unlock()
	c.signal()
}

// forgetDevices fails the pending commands of deleted devices and deletes
// all their commands; it returns the failed ones for the live stream.
func (c *Commands) forgetDevices(now time.Time) []Command {
	c.wakeMu.Lock()
	devs := c.forget
	c.forget = map[string]struct{}{}
	c.wakeMu.Unlock()
	var failed []Command
	var gone []string
	c.mu.Lock()
	for dev := range devs {
		for _, e := range c.byDevice[dev] {
			if !e.cmd.Status.Final() {
				e.needsSend = false
				e.cmd.Error = "the device was deleted"
				c.transitionLocked(e, StatusFailed, now, e.cmd.Error)
				failed = append(failed, e.cmd.clone())
			}
			gone = append(gone, e.cmd.ID)
			delete(c.byID, e.cmd.ID)
			delete(c.dirty, e.cmd.ID)
			if e.cmd.IdempotencyKey != "" {
				delete(c.idem, dev+"\x00"+e.cmd.IdempotencyKey)
			}
		}
		delete(c.byDevice, dev)
	}
	c.mu.Unlock()
	if len(gone) > 0 {
		if err := c.store.Delete(gone...); err != nil {
			c.m.storeErrors.Inc()
			c.log.Warn("delete commands of deleted devices; they are dropped again after a restart", "count", len(gone), "err", err)
		}
	}
	return failed
}

// prune deletes final commands past the retention or beyond the number
// kept per device.
func (c *Commands) prune(now time.Time) {
	var gone []string
	c.mu.Lock()
	for dev, es := range c.byDevice {
		final := 0
		for _, e := range es {
			if e.cmd.Status.Final() {
				final++
			}
		}
		kept := es[:0]
		for _, e := range es {
			old := e.cmd.CompletedAt != nil && now.Sub(*e.cmd.CompletedAt) > c.cfg.Retention
			if e.cmd.Status.Final() && (final > c.cfg.KeepPerDevice || old) {
				final--
				gone = append(gone, e.cmd.ID)
				delete(c.byID, e.cmd.ID)
				if e.cmd.IdempotencyKey != "" {
					delete(c.idem, dev+"\x00"+e.cmd.IdempotencyKey)
				}
				continue
			}
			kept = append(kept, e)
		}
		clear(es[len(kept):])
		if len(kept) == 0 {
			delete(c.byDevice, dev)
		} else {
			c.byDevice[dev] = kept
		}
	}
	c.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	if err := c.store.Delete(gone...); err != nil {
		c.m.storeErrors.Inc()
		c.log.Warn("delete old commands; they are pruned again after a restart", "count", len(gone), "err", err)
	}
}

// expiryItem is a pending command's expiry in the heap.
type expiryItem struct {
	at time.Time
	id string
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
