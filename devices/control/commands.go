package control

import (
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

// entry is a command with the loop's bookkeeping.
type entry struct {
	cmd       Command
	needsSend bool   // queued, or sent before a restart or a dropped delivery
	stored    uint64 // the revision in the store
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
