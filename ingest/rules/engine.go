package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/metrics"
)

// Devices is what the engine needs of the device registry: a device's type
// and labels decide which rules watch it.
type Devices interface {
	Get(id string) (devices.Device, bool)
	List() []devices.Device
}

// Presence tells whether a device is connected.
type Presence interface {
	Online(id string) bool
}

// Publisher takes messages for the live stream; it must not block.
type Publisher interface {
	Publish(msgs ...live.Message)
}

// Deps are the parts of the hub the engine works with.
type Deps struct {
	// DB is the hub's state database; the engine keeps its rules and
	// alerts in buckets of its own.
	DB      *bolt.DB
	Devices Devices
	// Presence may be nil: every device then starts out offline.
	Presence Presence
	Live     Publisher
	// Metrics may be nil.
	Metrics *metrics.Registry
	Logger  *slog.Logger
}

// Engine evaluates the rules and keeps the alerts. Readings come in through
// Observe, presence changes through PresenceChanged; conditions that depend
// on time (for, absence, offline, flap hold) are driven by one timer
// goroutine. All evaluation is in memory and bounded by the number of rules
// that match the device; alert changes are published to the live stream at
// once and written to the state database by a flusher goroutine. Safe for
// concurrent use.
type Engine struct {
	cfg     Config
	db      *bolt.DB
	devs    Devices
	pres    Presence
	live    Publisher
	log     *slog.Logger
	metrics engineMetrics

	// idx is the current index; swapped under mu, read without it only to
	// skip the lock when there are no rules.
	idx atomic.Pointer[index]

	// rulesMu serialises rule changes, which write the database before
	// taking mu.
	rulesMu sync.Mutex
	rules   map[string]*Rule

	mu        sync.Mutex
	states    map[stateKey]*state
	devCache  map[string]*devRules
	alerts    map[string]*Alert // every alert kept: active ones and the history
	timers    timers
	silences  map[string]time.Time // rule ID -> end of its silence
	dirty     map[string]struct{}  // alert IDs to write (or delete when gone)
	events    []Event              // to publish once mu is released
	counts    map[string]int       // alerts by state
	resolved  int                  // resolved alerts kept
	wakeTimer bool
	started   bool
	lastID    int64 // time part of the newest alert ID

	pubMu    sync.Mutex // keeps events in order between mu and the stream
	wake     chan struct{}
	flush    chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type engineMetrics struct {
	evaluations   *metrics.Counter
	fired         *metrics.Counter
	resolved      *metrics.Counter
	persistErrors *metrics.Counter
}

// Errors callers decide on.
var (
	ErrNotFound      = errors.New("rule not found")
	ErrExists        = errors.New("rule already exists")
	ErrDeclared      = errors.New("rule is declared in the config file; change it there")
	ErrAlertNotFound = errors.New("alert not found")
	ErrNotFiring     = errors.New("only a firing alert can be acknowledged")
)

// New loads the rules and alerts from the state database, merges the rules
// declared in the config file (they replace stored ones of the same ID;
// config rules no longer declared are removed) and restores the state of
// pending and firing alerts. Call Start to begin evaluating time.
func New(cfg Config, declared []Spec, deps Deps) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateDeclared(declared); err != nil {
		return nil, err
	}
	reg := deps.Metrics
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	e := &Engine{cfg: cfg, db: deps.DB, devs: deps.Devices, pres: deps.Presence, live: deps.Live, log: deps.Logger,
		rules: map[string]*Rule{}, states: map[stateKey]*state{}, devCache: map[string]*devRules{},
		alerts: map[string]*Alert{}, silences: map[string]time.Time{}, dirty: map[string]struct{}{},
		counts: map[string]int{}, wake: make(chan struct{}, 1), flush: make(chan struct{}, 1)}
	e.metrics = engineMetrics{
		evaluations:   reg.Counter("telehub_rules_evaluations_total", "Rule evaluations: one per matching rule per reading."),
		fired:         reg.Counter(`telehub_alert_changes_total{change="firing"}`, "Alert changes, by change."),
		resolved:      reg.Counter(`telehub_alert_changes_total{change="resolved"}`, "Alert changes, by change."),
		persistErrors: reg.Counter("telehub_alerts_persist_errors_total", "Failed writes of alert state to the state database."),
	}
	reg.GaugeFunc("telehub_rules", "Alert rules evaluated.", func() float64 {
		if x := e.idx.Load(); x != nil {
			return float64(len(x.rules))
		}
		return 0
	})
	for _, s := range []string{StatePending, StateFiring} {
		reg.GaugeFunc(`telehub_alerts{state="`+s+`"}`, "Alerts by state.", func() float64 {
			e.mu.Lock()
			defer e.mu.Unlock()
			return float64(e.counts[s])
		})
	}
	reg.GaugeFunc("telehub_rule_states", "Rule and device pairs the engine tracks.", func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(len(e.states))
	})
	changed, err := e.load(declared, time.Now())
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.install(time.Now())
	e.restore(changed, time.Now())
	e.mu.Unlock()
	return e, nil
}

// Start begins watching devices for timed rules and starts the timer and
// flusher goroutines; they end with ctx or Stop.
func (e *Engine) Start(ctx context.Context) {
	ctx, e.cancel = context.WithCancel(ctx)
	now := time.Now()
	e.mu.Lock()
	e.started = true
	for _, st := range e.states {
		e.reconcile(st, now)
	}
	for _, c := range e.idx.Load().timed {
		e.watchAll(c, now)
	}
	e.unlockAndPublish()
	e.wg.Go(func() { e.run(ctx) })
	e.wg.Go(func() { e.flushLoop(ctx) })
}

// Stop ends the goroutines and writes what is not yet written. Safe to call
// twice.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		if e.cancel != nil {
			e.cancel()
		}
		e.wg.Wait()
		if err := e.flushNow(); err != nil {
			e.log.Error("alert state not written on stop", "err", err)
		}
	})
}

// Observe evaluates the rules that watch dev on its readings. It is called
// by the ingest pipeline once the readings are durable, on the publishing
// client's goroutine: the work is bounded by the rules matching the device
// and the fields of the readings, never waits for I/O, and costs one atomic
// load when there are no rules.
func (e *Engine) Observe(dev ingest.Device, pts []ingest.Point) {
	if x := e.idx.Load(); x == nil || len(x.rules) == 0 || len(pts) == 0 {
		return
	}
	now := time.Now()
	e.mu.Lock()
	x := e.idx.Load()
	dr := e.deviceRules(x, dev.ID, dev.Type)
	n := 0
	for _, pt := range pts {
		for _, f := range pt.Fields {
			cs := dr.byField[f.Name]
			for _, c := range cs {
				e.onValue(c, dev.ID, dev.Type, pt.Time, f.Value, now)
			}
			n += len(cs)
		}
	}
	for _, c := range dr.anyData {
		e.onData(c, dev.ID, dev.Type, now)
	}
	n += len(dr.anyData)
	e.unlockAndPublish()
	if n > 0 {
		e.metrics.evaluations.Add(uint64(n))
	}
}

// PresenceChanged feeds offline rules; register it with
// devices.Presence.OnChange. It does not block.
func (e *Engine) PresenceChanged(ev devices.PresenceEvent) {
	if x := e.idx.Load(); x == nil || len(x.timed) == 0 {
		return
	}
	d, ok := e.devs.Get(ev.DeviceID)
	if !ok {
		return
	}
	now := time.Now()
	e.mu.Lock()
	dr := e.deviceRules(e.idx.Load(), d.ID, d.Type)
	for _, c := range dr.offline {
		st := e.states[stateKey{c.rule.ID, d.ID}]
		if st == nil {
			st = e.addState(c, d.ID, d.Type)
		}
		if ev.Online {
			st.offline = false
		} else if !st.offline {
			st.offline, st.offlineSince = true, now
		}
		e.reconcile(st, now)
	}
	e.unlockAndPublish()
}

// deviceRules returns the rules watching a device, from the cache when the
// rules, its type and its labels have not changed. Called with mu held.
func (e *Engine) deviceRules(x *index, id, typ string) *devRules {
	var labels map[string]string
	if x.labels {
		if d, ok := e.devs.Get(id); ok {
			labels = d.Labels
		}
	}
	dr := e.devCache[id]
	if dr == nil || !dr.current(x, typ, labels) {
		dr = x.forDevice(id, typ, labels)
		e.devCache[id] = dr
	}
	return dr
}

// watchAll starts watching every registered device in a timed rule's
// scope, as if it had last reported (or gone offline) at now.
func (e *Engine) watchAll(c *compiled, now time.Time) {
	for _, d := range e.devs.List() {
		if !c.matches(d.ID, d.Type, d.Labels) {
			continue
		}
		k := stateKey{c.rule.ID, d.ID}
		if e.states[k] != nil {
			continue
		}
		st := e.addState(c, d.ID, d.Type)
		switch c.kind {
		case KindAbsence:
			st.lastSeen = now
		case KindOffline:
			if e.pres == nil || !e.pres.Online(d.ID) {
				st.offline, st.offlineSince = true, now
			}
		}
		e.reconcile(st, now)
	}
}

// changed records an alert change: to be written, and published.
func (e *Engine) changed(a *Alert, change string, now time.Time) {
	e.dirty[a.ID] = struct{}{}
	ev := Event{Change: change, Alert: a.clone(false)}
	ev.Silenced = e.silenced(a.RuleID, now)
	e.events = append(e.events, ev)
}

// silenced reports whether a rule is silenced. Called with mu held.
func (e *Engine) silenced(ruleID string, now time.Time) bool {
	c := e.idx.Load().rules[ruleID]
	return c != nil && c.rule.silenced(now)
}

func (e *Engine) count(s string, d int) { e.counts[s] += d }

// unlockAndPublish releases mu and then publishes the events gathered under
// it, in order, and wakes the goroutines that have work.
func (e *Engine) unlockAndPublish() {
	evs := e.events
	e.events = nil
	wake, flush := e.wakeTimer, len(e.dirty) > 0
	e.wakeTimer = false
	if len(evs) == 0 {
		e.mu.Unlock()
	} else {
		e.pubMu.Lock()
		e.mu.Unlock()
		msgs := make([]live.Message, 0, len(evs))
		for _, ev := range evs {
			m, err := live.Event(live.KindAlert, ev.DeviceID, ev.UpdatedAt, ev)
			if err != nil {
				e.log.Error("alert event not published", "alert_id", ev.ID, "err", err)
				continue
			}
			msgs = append(msgs, m)
		}
		e.live.Publish(msgs...)
		e.pubMu.Unlock()
	}
	if wake {
		signal(e.wake)
	}
	if flush {
		signal(e.flush)
	}
}

// signal wakes a goroutine waiting on ch (buffered 1) without blocking: a
// wake-up already pending covers this one.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// tickBatch bounds the timers handled under one hold of mu, so that a mass
// expiry (every device of a fleet offline at once) does not stall ingest.
const tickBatch = 256

// run is the timer goroutine: it reconciles states whose deadline passed
// and ends rules' silences.
func (e *Engine) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		e.mu.Lock()
		next, ok := e.timers.next()
		for _, until := range e.silences {
			if !ok || until.Before(next) {
				next, ok = until, true
			}
		}
		e.mu.Unlock()
		var due <-chan time.Time
		if ok {
			t.Reset(time.Until(next))
			due = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-due:
			e.tick(time.Now())
		}
	}
}

func (e *Engine) tick(now time.Time) {
	for more := true; more; {
		e.mu.Lock()
		more = false
		for i := 0; i < tickBatch; i++ {
			st := e.timers.popDue(now)
			if st == nil {
				break
			}
			more = i == tickBatch-1
			if e.states[st.key] != st {
				continue
			}
			e.reconcile(st, now)
			e.maybeDrop(st, now)
		}
		if !more {
			for id, until := range e.silences {
				if !now.Before(until) {
					delete(e.silences, id)
					e.unsilenced(id, now)
				}
			}
		}
		e.unlockAndPublish()
	}
}

// unsilenced re-announces a rule's firing alerts when its silence ends, so
// that webhooks hear of what fired during the silence.
func (e *Engine) unsilenced(ruleID string, now time.Time) {
	for _, st := range e.states {
		if st.key.rule == ruleID && st.alert != nil && st.alert.State == StateFiring {
			st.alert.record(Transition{Change: ChangeUnsilenced, At: now})
			e.changed(st.alert, ChangeUnsilenced, now)
		}
	}
}

// describe is a short description of a rule for log lines.
func describe(r *Rule) string { return fmt.Sprintf("%s (%s)", r.ID, r.Name) }
