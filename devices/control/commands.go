package control

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// Errors of the command service that callers decide on.
var (
	// ErrQueueFull: the device has as many pending commands as allowed.
	ErrQueueFull = errors.New("too many pending commands for this device")
	// ErrIdempotencyConflict: the idempotency key names a different command.
	ErrIdempotencyConflict = errors.New("idempotency key already used for a different command")
	// ErrUnreachable: the device is not connected, or not subscribed to its
	// command topic. Returned by a CommandSender; the command stays queued.
	ErrUnreachable = errors.New("device not reachable")
	// ErrCommandNotFound: no such command for this device.
	ErrCommandNotFound = errors.New("command not found")
	// ErrLate: the command is already final; the answer is ignored.
	ErrLate = errors.New("command already final")
	// ErrStopped: the command service stopped before an answer was stored.
	ErrStopped = errors.New("command service stopped")
)

// CommandConfig configures the command service.
type CommandConfig struct {
	// DefaultTimeout is a command's lifetime when the request names none.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// MaxTimeout bounds the lifetime a request may ask for.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// MaxPending bounds the pending (queued, sent, delivered) commands of
	// one device; more are refused at once (HTTP 429).
	MaxPending int `yaml:"max_pending"`
	// KeepPerDevice is how many final commands of a device are kept for
	// queries; older ones are deleted.
	KeepPerDevice int `yaml:"keep_per_device"`
	// Retention is how long final commands are kept at most.
	Retention time.Duration `yaml:"retention"`
	// RetryInterval is how often queued commands of connected devices are
	// tried again (besides on connect and subscribe), and old ones pruned.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// EventQueue is the capacity of the queue of device answers (PUBACKs
	// and results) to the command loop.
	EventQueue int `yaml:"event_queue"`
	// MaxParamsBytes bounds the JSON parameters of one command.
	MaxParamsBytes int `yaml:"max_params_bytes"`
}

// DefaultCommandConfig returns the defaults.
func DefaultCommandConfig() CommandConfig {
	return CommandConfig{
		DefaultTimeout: time.Hour,
		MaxTimeout:     7 * 24 * time.Hour,
		MaxPending:     100,
		KeepPerDevice:  100,
		Retention:      7 * 24 * time.Hour,
		RetryInterval:  30 * time.Second,
		EventQueue:     1024,
		MaxParamsBytes: 16 << 10,
	}
}

// Validate checks the values.
func (c CommandConfig) Validate() error {
	var errs []error
	if c.DefaultTimeout <= 0 || c.MaxTimeout < c.DefaultTimeout {
		errs = append(errs, errors.New("commands.default_timeout must be positive and at most commands.max_timeout"))
	}
	if c.MaxPending < 1 || c.KeepPerDevice < 0 || c.EventQueue < 1 {
		errs = append(errs, errors.New("commands.max_pending and commands.event_queue must be at least 1, commands.keep_per_device not negative"))
	}
	if c.Retention <= 0 || c.RetryInterval <= 0 {
		errs = append(errs, errors.New("commands.retention and commands.retry_interval must be positive"))
	}
	if c.MaxParamsBytes < 256 {
		errs = append(errs, errors.New("commands.max_params_bytes must be at least 256"))
	}
	return errors.Join(errs...)
}

// CommandStore persists commands. BoltCommandStore keeps them in the
// hub's state database; a clustered hub will keep them in a JetStream
// key-value bucket. Implementations must make Put atomic.
type CommandStore interface {
	Put(cmds ...Command) error
	Delete(ids ...string) error
	Load(fn func(Command) error) error
}

// CommandSender publishes a command to its device. It returns nil once the
// command is on its way (the device's session holds it), ErrUnreachable
// when the device is not connected or not subscribed.
type CommandSender interface {
	SendCommand(c Command) error
}

// LivePublisher takes live stream messages; it must not block.
type LivePublisher interface {
	Publish(msgs ...live.Message)
}

// DeviceLookup finds registered devices.
type DeviceLookup interface {
	Get(id string) (devices.Device, bool)
}

// CommandChecker validates a command for a device type.
type CommandChecker interface {
	Check(deviceType, name string, params json.RawMessage) error
}

// CommandRequest is a command as an operator submits it.
type CommandRequest struct {
	DeviceID string
	Name     string
	Params   json.RawMessage
	// Timeout is the lifetime from now; zero takes ExpiresAt, or the
	// default when that is zero too.
	Timeout        time.Duration
	ExpiresAt      time.Time
	IdempotencyKey string
	// By names who sent it.
	By string
}

// CommandFilter selects commands of a device for List.
type CommandFilter struct {
	Statuses []CommandStatus
	Name     string
	Limit    int
}

type commandMetrics struct {
	created, refusedInvalid, refusedFull prometheus.Counter
	succeeded, failed, expired           prometheus.Counter
	sends, dropped, late, unknown        prometheus.Counter
	storeErrors                          prometheus.Counter
}

func newCommandMetrics(r prometheus.Registerer) *commandMetrics {
	const fin, ref = "Commands that reached a final status, by status.", "Commands refused, by reason."
	f := promauto.With(r)
	refused := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_commands_refused_total", Help: ref}, []string{"reason"})
	completed := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_commands_completed_total", Help: fin}, []string{"status"})
	ignored := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_command_answers_ignored_total",
		Help: "Device answers that completed nothing, by reason."}, []string{"reason"})
	return &commandMetrics{
		created:        f.NewCounter(prometheus.CounterOpts{Name: "telehub_commands_created_total", Help: "Commands accepted."}),
		refusedInvalid: refused.WithLabelValues("invalid"),
		refusedFull:    refused.WithLabelValues("queue_full"),
		succeeded:      completed.WithLabelValues("succeeded"),
		failed:         completed.WithLabelValues("failed"),
		expired:        completed.WithLabelValues("expired"),
		sends:          f.NewCounter(prometheus.CounterOpts{Name: "telehub_command_sends_total", Help: "Command publishes to devices, resends included."}),
		dropped:        f.NewCounter(prometheus.CounterOpts{Name: "telehub_command_deliveries_dropped_total", Help: "Command publishes the broker dropped before the device acknowledged them."}),
		late:           ignored.WithLabelValues("late"),
		unknown:        ignored.WithLabelValues("unknown"),
		storeErrors:    f.NewCounter(prometheus.CounterOpts{Name: "telehub_command_store_errors_total", Help: "Failed writes of command changes (retried)."}),
	}
}

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

// entry is a command with the loop's bookkeeping.
type entry struct {
	cmd       Command
	needsSend bool   // queued, or sent before a restart or a dropped delivery
	stored    uint64 // the revision in the store
}

// storeWaiter is the acknowledgement of a device's answer, waiting for its
// command's final status to be in the store.
type storeWaiter struct {
	commandID string
	complete  func(error)
}

// Commands is the command service: it accepts commands, keeps them
// (persisted), sends them when their device is reachable, follows their
// deliveries and answers, expires them, and reports every change on the live
// stream. One loop goroutine owns every status change; Submit and the
// queries run on the callers' goroutines. Safe for concurrent use.
type Commands struct {
	cfg     CommandConfig
	store   CommandStore
	reg     DeviceLookup
	checker CommandChecker
	live    LivePublisher
	log     *slog.Logger
	m       *commandMetrics

	createMu sync.Mutex // serialises Submit: idempotency and limits

	mu       sync.RWMutex
	byID     map[string]*entry
	byDevice map[string][]*entry // in creation order
	idem     map[string]*entry   // deviceID + "\x00" + key
	expiries expiryHeap
	changed  chan struct{} // closed and replaced on every change

	events chan event

	wakeMu   sync.Mutex
	flush    map[string]struct{}
	flushAll bool
	forget   map[string]struct{} // deleted devices
	wake     chan struct{}

	dirty  map[string]struct{} // loop only: changes not yet persisted
	sender CommandSender
	done   chan struct{} // closed on Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	// waiters are answers' acknowledgements waiting for the store; the loop
	// completes them (release), Stop fails those left.
	waitMu  sync.Mutex
	waiters []storeWaiter
	stopped bool
}

// NewCommands loads the commands from store. checker may be nil (no
// validation beyond the form of name and params); reg may be nil in tests
// that submit for any device.
func NewCommands(cfg CommandConfig, store CommandStore, reg DeviceLookup, checker CommandChecker,
	pub LivePublisher, mr prometheus.Registerer, log *slog.Logger) (*Commands, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mr == nil {
		mr = prometheus.NewRegistry()
	}
	c := &Commands{cfg: cfg, store: store, reg: reg, checker: checker, live: pub, log: log, m: newCommandMetrics(mr),
		byID: map[string]*entry{}, byDevice: map[string][]*entry{}, idem: map[string]*entry{},
		changed: make(chan struct{}), events: make(chan event, cfg.EventQueue),
		flush: map[string]struct{}{}, forget: map[string]struct{}{}, wake: make(chan struct{}, 1), dirty: map[string]struct{}{}, done: make(chan struct{})}
	var loaded []*entry
	err := store.Load(func(cmd Command) error {
		e := &entry{cmd: cmd, needsSend: cmd.Status == StatusQueued || cmd.Status == StatusSent, stored: cmd.Revision}
		loaded = append(loaded, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load commands: %w", err)
	}
	slices.SortFunc(loaded, func(a, b *entry) int { return strings.Compare(a.cmd.ID, b.cmd.ID) })
	for _, e := range loaded {
		c.insert(e)
	}
	promauto.With(mr).NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_commands_pending", Help: "Commands queued, sent or delivered."}, func() float64 {
		c.mu.RLock()
		defer c.mu.RUnlock()
		n := 0
		for _, e := range c.byID {
			if !e.cmd.Status.Final() {
				n++
			}
		}
		return float64(n)
	})
	return c, nil
}

// insert adds e to the indexes; c.mu must be held (or c not shared yet).
func (c *Commands) insert(e *entry) {
	c.byID[e.cmd.ID] = e
	c.byDevice[e.cmd.DeviceID] = append(c.byDevice[e.cmd.DeviceID], e)
	if e.cmd.IdempotencyKey != "" {
		c.idem[e.cmd.DeviceID+"\x00"+e.cmd.IdempotencyKey] = e
	}
	if !e.cmd.Status.Final() {
		heap.Push(&c.expiries, expiryItem{at: e.cmd.ExpiresAt, id: e.cmd.ID})
	}
}

// Start runs the loop that sends, follows and expires commands through
// sender. Stop ends it.
func (c *Commands) Start(ctx context.Context, sender CommandSender) {
	ctx, c.cancel = context.WithCancel(ctx)
	c.sender = sender
	c.requestFlushAll()
	c.wg.Go(func() { c.run(ctx) })
}

// Stop ends the loop after persisting what it changed. Safe to call twice,
// and without Start.
func (c *Commands) Stop() {
	c.once.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		close(c.done)
		c.waitMu.Lock()
		c.stopped = true
		c.waitMu.Unlock()
		c.release(true)
	})
}

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

// Get returns a command of a device.
func (c *Commands) Get(deviceID, id string) (Command, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.byID[id]
	if !ok || e.cmd.DeviceID != deviceID {
		return Command{}, false
	}
	return e.cmd.clone(), true
}

// List returns a device's commands, newest first, that pass f.
func (c *Commands) List(deviceID string, f CommandFilter) []Command {
	c.mu.RLock()
	defer c.mu.RUnlock()
	es := c.byDevice[deviceID]
	out := []Command{}
	for i := len(es) - 1; i >= 0 && (f.Limit <= 0 || len(out) < f.Limit); i-- {
		cmd := es[i].cmd
		if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, cmd.Status) || f.Name != "" && cmd.Name != f.Name {
			continue
		}
		out = append(out, cmd.clone())
	}
	return out
}

// Wait returns the command once its revision is above after, it is final,
// or ctx ends, whichever comes first; ok is false for an unknown command.
func (c *Commands) Wait(ctx context.Context, deviceID, id string, after uint64) (cmd Command, ok bool) {
	for {
		c.mu.RLock()
		e, found := c.byID[id]
		ch := c.changed
		if found && e.cmd.DeviceID == deviceID {
			cmd = e.cmd.clone()
		}
		c.mu.RUnlock()
		if !found || cmd.DeviceID != deviceID {
			return Command{}, false
		}
		if cmd.Revision > after || cmd.Status.Final() {
			return cmd, true
		}
		select {
		case <-ctx.Done():
			return cmd, true
		case <-ch:
		}
	}
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

// Forget drops the commands of a deleted device: pending ones fail ("the
// device was deleted", on the live stream), then all are deleted, so that a
// new device under the same ID inherits nothing. It does not block.
func (c *Commands) Forget(deviceID string) {
	c.wakeMu.Lock()
	c.forget[deviceID] = struct{}{}
	c.wakeMu.Unlock()
	c.signal()
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
