package control

// Submission: how an operator's command is validated, checked against its
// idempotency key and stored as queued before the loop sends it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/telehub/telehub/devices"
)

// Submit accepts a command: it validates it against the device type's
// schema, stores it (durably, before returning) as queued and asks the loop
// to send it. With an idempotency key already used for this device it
// returns the earlier command and replayed = true, or ErrIdempotencyConflict
// when the earlier command differs in name or parameters.
func (c *Commands) Submit(req CommandRequest) (cmd Command, replayed bool, err error) {
	devType := ""
	if c.reg != nil {
		d, ok := c.reg.Get(req.DeviceID)
		if !ok {
			return Command{}, false, devices.ErrNotFound
		}
		devType = d.Type
	}
	if err := c.validate(devType, &req); err != nil {
		c.m.refusedInvalid.Inc()
		return Command{}, false, err
	}
	now := time.Now().UTC()
	expires := now.Add(c.cfg.DefaultTimeout)
	switch {
	case req.Timeout != 0:
		expires = now.Add(req.Timeout)
	case !req.ExpiresAt.IsZero():
		expires = req.ExpiresAt.UTC()
	}
	if !expires.After(now) || expires.Sub(now) > c.cfg.MaxTimeout {
		c.m.refusedInvalid.Inc()
		return Command{}, false, &devices.ValidationError{Msg: fmt.Sprintf("expiry must be in the future and at most %v away", c.cfg.MaxTimeout)}
	}

	c.createMu.Lock()
	defer c.createMu.Unlock()
	c.mu.RLock()
	if req.IdempotencyKey != "" {
		if e, ok := c.idem[req.DeviceID+"\x00"+req.IdempotencyKey]; ok {
			prev := e.cmd.clone()
			c.mu.RUnlock()
			if prev.Name != req.Name || !sameParams(prev.Params, req.Params) {
				return Command{}, false, ErrIdempotencyConflict
			}
			return prev, true, nil
		}
	}
	pending := 0
	for _, e := range c.byDevice[req.DeviceID] {
		if !e.cmd.Status.Final() {
			pending++
		}
	}
	c.mu.RUnlock()
	if pending >= c.cfg.MaxPending {
		c.m.refusedFull.Inc()
		return Command{}, false, ErrQueueFull
	}

	now = now.Truncate(time.Millisecond)
	cmd = Command{ID: newCommandID(now), DeviceID: req.DeviceID, Name: req.Name, Params: req.Params,
		Status: StatusQueued, Revision: 1, IdempotencyKey: req.IdempotencyKey, CreatedBy: req.By,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: expires.Truncate(time.Millisecond),
		History: []Transition{{Status: StatusQueued, At: now}}}
	if err := c.store.Put(cmd); err != nil {
		c.m.storeErrors.Inc()
		return Command{}, false, fmt.Errorf("store command: %w", err)
	}
	// The loop may not send it before "queued" is on the live stream.
	e := &entry{cmd: cmd, stored: cmd.Revision}
	c.mu.Lock()
	c.insert(e)
	c.notifyLocked()
	c.mu.Unlock()
	c.m.created.Inc()
	c.emit(cmd)
	c.mu.Lock()
	e.needsSend = !e.cmd.Status.Final()
	c.mu.Unlock()
	c.requestFlush(req.DeviceID)
	return cmd.clone(), false, nil
}

// validate checks the request's form and, through the checker, its name
// and parameters; it normalises Params to compact JSON.
func (c *Commands) validate(devType string, req *CommandRequest) error {
	if req.IdempotencyKey != "" && !validIdempotencyKey(req.IdempotencyKey) {
		return &devices.ValidationError{Msg: "idempotency key: 1-128 printable characters"}
	}
	if req.Timeout < 0 {
		return &devices.ValidationError{Msg: "timeout must be positive"}
	}
	if req.Timeout != 0 && !req.ExpiresAt.IsZero() {
		return &devices.ValidationError{Msg: "give timeout or expires_at, not both"}
	}
	if len(req.Params) > c.cfg.MaxParamsBytes {
		return &devices.ValidationError{Msg: fmt.Sprintf("params: larger than %d bytes", c.cfg.MaxParamsBytes)}
	}
	if !commandNamePattern.MatchString(req.Name) {
		return &devices.ValidationError{Msg: fmt.Sprintf("name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter", req.Name)}
	}
	if _, err := decodeParams(req.Params); err != nil {
		return err
	}
	if len(bytes.TrimSpace(req.Params)) == 0 || bytes.Equal(bytes.TrimSpace(req.Params), []byte("null")) {
		req.Params = json.RawMessage("{}")
	} else {
		var buf bytes.Buffer
		if err := json.Compact(&buf, req.Params); err != nil {
			return &devices.ValidationError{Msg: "params: " + err.Error()}
		}
		req.Params = buf.Bytes()
	}
	if c.checker != nil {
		return c.checker.Check(devType, req.Name, req.Params)
	}
	return nil
}

func sameParams(a, b json.RawMessage) bool {
	va, err1 := decodeParams(a)
	vb, err2 := decodeParams(b)
	return err1 == nil && err2 == nil && jsonEqual(va, vb)
}
