package control

// Device answers: deliveries (PUBACK or a dropped publish) and results
// reach the loop as events, and an answer's acknowledgement waits until
// the command's final status is in the store.

import (
	"errors"
	"time"

	"github.com/telehub/telehub/internal/wal"
)

type eventKind int

const (
	evDelivered eventKind = iota
	evDropped
	evResult
)

type event struct {
	kind      eventKind
	deviceID  string
	commandID string
	result    CommandResult
}

// storeWaiter is the acknowledgement of a device's answer, waiting for its
// command's final status to be in the store.
type storeWaiter struct {
	commandID string
	complete  func(error)
}

// Delivered reports the device's PUBACK (delivered true) or that the broker
// dropped the publish before one came (false).
func (c *Commands) Delivered(deviceID, commandID string, delivered bool) {
	kind := evDelivered
	if !delivered {
		kind = evDropped
	}
	if _, err := c.pending(deviceID, commandID); err != nil {
		return
	}
	c.enqueue(event{kind: kind, deviceID: deviceID, commandID: commandID})
}

// Result reports a device's answer. It returns ErrCommandNotFound for a
// command the device does not have and ErrLate for one already final; both
// are counted and otherwise ignored.
//
// The returned commit completes once the command's final status is in the
// store (the loop's transaction that wrote it is committed), or fails if
// the service stops first: the broker acknowledges the answer only then,
// so an acknowledged answer survives a crash. With ErrLate the commit
// still counts: the answer that made the command final may not be stored
// yet, and this one is a resend of it.
func (c *Commands) Result(deviceID, commandID string, r CommandResult) (wal.Commit, error) {
	stored, err := c.pending(deviceID, commandID)
	switch {
	case errors.Is(err, ErrLate) && !stored:
		return c.whenStored(commandID), err
	case err != nil:
		return wal.Commit{}, err
	}
	cm := c.whenStored(commandID)
	c.enqueue(event{kind: evResult, deviceID: deviceID, commandID: commandID, result: r})
	return cm, nil
}

// pending checks that a command exists for the device and is not final;
// stored tells whether a final command's status is in the store.
func (c *Commands) pending(deviceID, commandID string) (stored bool, err error) {
	c.mu.RLock()
	e, ok := c.byID[commandID]
	final := ok && e.cmd.Status.Final()
	stored = ok && e.stored == e.cmd.Revision
	c.mu.RUnlock()
	switch {
	case !ok || e.cmd.DeviceID != deviceID:
		c.m.unknown.Inc()
		return false, ErrCommandNotFound
	case final:
		c.m.late.Inc()
		return stored, ErrLate
	}
	return false, nil
}

// whenStored returns a commit that completes once the command is final
// and stored, or gone. The loop checks after every round (it is woken
// here), so the wait is one round and its transaction.
func (c *Commands) whenStored(commandID string) wal.Commit {
	cm, complete := wal.NewCommit()
	c.waitMu.Lock()
	if c.stopped {
		c.waitMu.Unlock()
		complete(ErrStopped)
		return cm
	}
	c.waiters = append(c.waiters, storeWaiter{commandID: commandID, complete: complete})
	c.waitMu.Unlock()
	c.signal()
	return cm
}

// release completes the waiters whose commands are final and stored (or
// gone); with stopping it fails the others. Only the loop calls it, and
// Stop once the loop has ended.
func (c *Commands) release(stopping bool) {
	c.waitMu.Lock()
	ws := c.waiters
	c.waiters = nil
	c.waitMu.Unlock()
	if len(ws) == 0 {
		return
	}
	var done, keep []storeWaiter
	c.mu.RLock()
	for _, w := range ws {
		e, ok := c.byID[w.commandID]
		if !ok || e.cmd.Status.Final() && e.stored == e.cmd.Revision {
			done = append(done, w)
		} else {
			keep = append(keep, w)
		}
	}
	c.mu.RUnlock()
	for _, w := range done {
		w.complete(nil)
	}
	if stopping {
		for _, w := range keep {
			w.complete(ErrStopped)
		}
		return
	}
	if len(keep) > 0 {
		c.waitMu.Lock()
		c.waiters = append(keep, c.waiters...)
		c.waitMu.Unlock()
	}
}

// enqueue hands a device's answer to the loop. Only answers for pending
// commands get here, so the queue holds at most two per pending command:
// waiting for room (the device's own goroutine waits) loses nothing and is
// bounded. After Stop answers are dropped.
func (c *Commands) enqueue(ev event) {
	select {
	case c.events <- ev:
	case <-c.done:
	}
}

// applyLocked applies a device's answer; c.mu is held.
func (c *Commands) applyLocked(ev event, now time.Time) (Command, bool) {
	e, ok := c.byID[ev.commandID]
	if !ok || e.cmd.DeviceID != ev.deviceID {
		return Command{}, false
	}
	if e.cmd.Status.Final() {
		if ev.kind == evResult {
			c.m.late.Inc()
		}
		return Command{}, false
	}
	switch ev.kind {
	case evDelivered:
		if e.cmd.Status != StatusSent {
			return Command{}, false
		}
		e.cmd.DeliveredAt = &now
		c.transitionLocked(e, StatusDelivered, now, "")
	case evDropped:
		if e.cmd.Status != StatusSent {
			return Command{}, false
		}
		c.m.dropped.Inc()
		e.needsSend = true
		c.transitionLocked(e, StatusQueued, now, "the broker dropped the delivery; it is sent again when the device is reachable")
	case evResult:
		e.needsSend = false
		r := ev.result
		e.cmd.Result, e.cmd.ResultVia = r.Result, r.Via
		if r.OK {
			c.m.succeeded.Inc()
			c.transitionLocked(e, StatusSucceeded, now, "")
		} else {
			e.cmd.Error = r.Error
			c.m.failed.Inc()
			c.transitionLocked(e, StatusFailed, now, r.Error)
		}
	}
	return e.cmd.clone(), true
}
