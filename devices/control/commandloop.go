package control

// The command loop: the one goroutine that sends queued commands to
// reachable devices, applies status changes, persists them and reports
// them on the live stream.

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/live"
)

// Subscribed tells the service that the device subscribed to something:
// its queued commands may now reach it.
func (c *Commands) Subscribed(deviceID string) { c.requestFlush(deviceID) }

// OnPresence is a devices.Presence listener: a device that comes online
// gets its queued commands (if its session is already subscribed; else on
// its SUBSCRIBE).
func (c *Commands) OnPresence(ev devices.PresenceEvent) {
	if ev.Online {
		c.requestFlush(ev.DeviceID)
	}
}

func (c *Commands) requestFlush(deviceID string) {
	c.wakeMu.Lock()
	c.flush[deviceID] = struct{}{}
	c.wakeMu.Unlock()
	c.signal()
}

func (c *Commands) requestFlushAll() {
	c.wakeMu.Lock()
	c.flushAll = true
	c.wakeMu.Unlock()
	c.signal()
}

func (c *Commands) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Commands) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Commands) emit(cmd Command) {
	if c.live == nil {
		return
	}
	if m, err := live.Event(live.KindCommand, cmd.DeviceID, cmd.UpdatedAt, cmd); err == nil {
		c.live.Publish(m)
	}
}

// run is the loop: it applies answers, expires, sends and persists.
func (c *Commands) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sweep := time.NewTicker(c.cfg.RetryInterval)
	defer sweep.Stop()
	var evs []event
	for {
		c.resetTimer(timer)
		evs = evs[:0]
		select {
		case <-ctx.Done():
			c.persist()
			return
		case ev := <-c.events:
			evs = append(evs, ev)
		drain:
			for len(evs) < 1024 {
				select {
				case ev := <-c.events:
					evs = append(evs, ev)
				default:
					break drain
				}
			}
		case <-c.wake:
		case <-timer.C:
		case <-sweep.C:
			c.requestFlushAll()
			c.prune(time.Now())
		}
		c.step(evs)
	}
}

// resetTimer arms the timer for the earliest expiry.
func (c *Commands) resetTimer(t *time.Timer) {
	c.mu.RLock()
	d := time.Hour
	if len(c.expiries) > 0 {
		d = max(time.Until(c.expiries[0].at), 0)
	}
	c.mu.RUnlock()
	t.Reset(d)
}

// step applies one round of work; only the loop calls it.
func (c *Commands) step(evs []event) {
	now := time.Now().UTC()
	var changed []Command
	c.mu.Lock()
	for _, ev := range evs {
		if ev.kind == evResult {
			// A result proves the delivery, whose PUBACK may come after it:
			// paho acknowledges a message only once its handler returned,
			// and a device may answer from the handler. A command still
			// "sent" is delivered first, so every lifecycle reads queued,
			// sent, delivered, then its end, on the stream and in history.
			if cmd, ok := c.applyLocked(event{kind: evDelivered, deviceID: ev.deviceID, commandID: ev.commandID}, now); ok {
				changed = append(changed, cmd)
			}
		}
		if cmd, ok := c.applyLocked(ev, now); ok {
			changed = append(changed, cmd)
		}
	}
	for len(c.expiries) > 0 && !c.expiries[0].at.After(now) {
		it := heap.Pop(&c.expiries).(expiryItem)
		e, ok := c.byID[it.id]
		if !ok || e.cmd.Status.Final() {
			continue
		}
		if !e.cmd.ExpiresAt.Equal(it.at) { // stale item
			continue
		}
		e.needsSend = false
		c.transitionLocked(e, StatusExpired, now, "no result before "+e.cmd.ExpiresAt.Format(time.RFC3339Nano))
		c.m.expired.Inc()
		changed = append(changed, e.cmd.clone())
	}
	c.mu.Unlock()

	changed = append(changed, c.sendQueued(now)...)
	changed = append(changed, c.forgetDevices(now)...)
	defer c.release(false)
	if len(changed) == 0 && len(c.dirty) == 0 {
		return
	}
	for _, cmd := range changed {
		c.dirty[cmd.ID] = struct{}{}
	}
	c.persist()
	c.mu.Lock()
	c.notifyLocked()
	c.mu.Unlock()
	for _, cmd := range changed {
		c.emit(cmd)
	}
}

// transitionLocked moves a command to status; c.mu is held.
func (c *Commands) transitionLocked(e *entry, st CommandStatus, now time.Time, detail string) {
	e.cmd.Status = st
	e.cmd.Revision++
	e.cmd.UpdatedAt = now
	if st.Final() {
		e.cmd.CompletedAt = &now
	}
	h := append(slices.Clone(e.cmd.History), Transition{Status: st, At: now, Detail: detail})
	if len(h) > maxHistory { // keep the first and the latest
		h = append(h[:1], h[len(h)-maxHistory+1:]...)
	}
	e.cmd.History = h
}

// sendQueued sends the commands waiting for the devices that asked to be
// flushed (or all, after a sweep) and returns those that changed.
func (c *Commands) sendQueued(now time.Time) []Command {
	c.wakeMu.Lock()
	all := c.flushAll
	devs := c.flush
	c.flush, c.flushAll = map[string]struct{}{}, false
	c.wakeMu.Unlock()
	if c.sender == nil {
		return nil
	}
	if all {
		c.mu.RLock()
		for _, e := range c.byID {
			if e.needsSend {
				devs[e.cmd.DeviceID] = struct{}{}
			}
		}
		c.mu.RUnlock()
	}
	var changed []Command
	for dev := range devs {
		c.mu.RLock()
		var todo []Command
		for _, e := range c.byDevice[dev] {
			if e.needsSend && !e.cmd.Status.Final() {
				todo = append(todo, e.cmd.clone())
			}
		}
		c.mu.RUnlock()
		for _, cmd := range todo {
			err := c.sender.SendCommand(cmd)
			if errors.Is(err, ErrUnreachable) {
				break
			}
			if err != nil {
				c.log.Warn("send command", "device_id", dev, "command_id", cmd.ID, "err", err)
				break
			}
			c.m.sends.Inc()
			c.mu.Lock()
			e := c.byID[cmd.ID]
			if e != nil && e.needsSend && !e.cmd.Status.Final() {
				e.needsSend = false
				e.cmd.Attempts++
				e.cmd.SentAt = &now
				detail := ""
				if e.cmd.Attempts > 1 {
					detail = fmt.Sprintf("attempt %d", e.cmd.Attempts)
				}
				c.transitionLocked(e, StatusSent, now, detail)
				changed = append(changed, e.cmd.clone())
			}
			c.mu.Unlock()
		}
	}
	return changed
}

// persist writes the changed commands; on failure they stay dirty and are
// written with the next change or sweep.
func (c *Commands) persist() {
	if len(c.dirty) == 0 {
		return
	}
	cmds := make([]Command, 0, len(c.dirty))
	c.mu.RLock()
	for id := range c.dirty {
		if e, ok := c.byID[id]; ok {
			cmds = append(cmds, e.cmd.clone())
		}
	}
	c.mu.RUnlock()
	if err := c.store.Put(cmds...); err != nil {
		c.m.storeErrors.Inc()
		c.log.Error("store command changes; retrying with the next change", "count", len(cmds), "err", err)
		return
	}
	clear(c.dirty)
	c.mu.Lock()
	for _, cmd := range cmds {
		if e, ok := c.byID[cmd.ID]; ok && e.cmd.Revision == cmd.Revision {
			e.stored = cmd.Revision
		}
	}
	c.mu.Unlock()
}
