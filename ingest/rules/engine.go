package rules

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/live"
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
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

var _ ingest.Observer = (*Engine)(nil)

// nShards is the number of device partitions; a power of two (the low
// shardBits bits of a device ID's hash).
const (
	shardBits = 5
	nShards   = 1 << shardBits
)

// Engine evaluates the rules and keeps the alerts. Readings come in through
// Observe, presence changes through PresenceChanged. Devices are
// partitioned into shards, each with its own lock, states, alerts and timer
// goroutine (which drives for, absence, offline and flap hold), so that
// publishers of different devices rarely wait for each other. All
// evaluation is in memory and bounded by the rules that match the device;
// alert changes are published to the live stream at once and written to
// the state database by a flusher goroutine. Safe for concurrent use.
type Engine struct {
	cfg     Config
	db      *bolt.DB
	devs    Devices
	pres    Presence
	live    Publisher
	log     *slog.Logger
	metrics engineMetrics
	seed    maphash.Seed
	shards  [nShards]*shard

	// idx is the latest index. Each shard evaluates with the index it has
	// applied (shard.idx); this one serves the rule count and silences.
	idx atomic.Pointer[index]

	// rulesMu serialises rule changes, which write the database and then
	// apply the new index to every shard.
	rulesMu sync.Mutex
	rules   map[string]*Rule

	silMu    sync.Mutex
	silences map[string]time.Time // rule ID -> end of its silence

	lastID  atomic.Int64 // time part of the newest alert ID
	started atomic.Bool

	wakeSil  chan struct{}
	flush    chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type engineMetrics struct {
	evaluations   prometheus.Counter
	fired         prometheus.Counter
	resolved      prometheus.Counter
	persistErrors prometheus.Counter
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
		reg = prometheus.NewRegistry()
	}
	e := &Engine{cfg: cfg, db: deps.DB, devs: deps.Devices, pres: deps.Presence, live: deps.Live, log: deps.Logger,
		seed: maphash.MakeSeed(), rules: map[string]*Rule{}, silences: map[string]time.Time{},
		wakeSil: make(chan struct{}, 1), flush: make(chan struct{}, 1)}
	for i := range e.shards {
		e.shards[i] = newShard(e)
	}
	f := promauto.With(reg)
	changes := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_alert_changes_total", Help: "Alert changes, by change."}, []string{"change"})
	e.metrics = engineMetrics{
		evaluations:   f.NewCounter(prometheus.CounterOpts{Name: "telehub_rules_evaluations_total", Help: "Rule evaluations of readings (a threshold a reading is far from is not evaluated)."}),
		fired:         changes.WithLabelValues("firing"),
		resolved:      changes.WithLabelValues("resolved"),
		persistErrors: f.NewCounter(prometheus.CounterOpts{Name: "telehub_alerts_persist_errors_total", Help: "Failed writes of alert state to the state database."}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_rules", Help: "Alert rules evaluated."}, func() float64 {
		if x := e.idx.Load(); x != nil {
			return float64(len(x.rules))
		}
		return 0
	})
	for _, s := range []string{StatePending, StateFiring} {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_alerts", Help: "Alerts by state.", ConstLabels: prometheus.Labels{"state": s}}, func() float64 {
			n := 0
			e.eachShard(func(sh *shard) { n += sh.counts[s] })
			return float64(n)
		})
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_rule_states", Help: "Rule and device pairs the engine tracks."}, func() float64 {
		n := 0
		e.eachShard(func(sh *shard) { n += len(sh.states) })
		return float64(n)
	})
	alerts, changed, err := e.load(declared, time.Now())
	if err != nil {
		return nil, err
	}
	now := time.Now()
	e.install(now)
	e.restore(alerts, changed, now)
	return e, nil
}

// shardOf returns the shard of a device.
func (e *Engine) shardOf(id string) *shard { return e.shards[e.hash(id)&(nShards-1)] }

// hash is a device ID's hash: its low bits choose the shard, the others
// the slot in the shard's devTable.
func (e *Engine) hash(id string) uint64 { return maphash.String(e.seed, id) }

// eachShard calls fn on every shard, holding its lock.
func (e *Engine) eachShard(fn func(*shard)) {
	for _, sh := range e.shards {
		sh.mu.Lock()
		fn(sh)
		sh.mu.Unlock()
	}
}

// Start begins watching devices for timed rules and starts the timer,
// silence and flusher goroutines; they end with ctx or Stop.
func (e *Engine) Start(ctx context.Context) {
	ctx, e.cancel = context.WithCancel(ctx)
	now := time.Now()
	e.started.Store(true)
	var devs []devices.Device
	if len(e.idx.Load().timed) > 0 {
		devs = e.devs.List()
	}
	for _, sh := range e.shards {
		sh.mu.Lock()
		for _, st := range sh.states {
			sh.reconcile(st, now)
		}
		for _, c := range sh.idx.timed {
			sh.watchAll(c, devs, now)
		}
		sh.unlockAndPublish()
		e.wg.Go(func() { sh.run(ctx) })
	}
	e.wg.Go(func() { e.runSilences(ctx) })
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
// and the fields of the readings, never waits for I/O, takes only the lock
// of the device's shard, and costs one atomic load when there are no rules.
func (e *Engine) Observe(dev ingest.Device, pts []ingest.Point) {
	if x := e.idx.Load(); x == nil || len(x.rules) == 0 || len(pts) == 0 {
		return
	}
	now := time.Now()
	h := e.hash(dev.ID)
	sh := e.shards[h&(nShards-1)]
	sh.mu.Lock()
	dr := sh.deviceRules(h, dev.ID, dev.Type, now)
	n := 0
	for _, pt := range pts {
		for _, f := range pt.Fields {
			if fr := dr.field(f.Name); fr != nil {
				n += sh.onField(dr, fr, dev.ID, pt.Time, f.Value, now)
			}
		}
	}
	if dr.anyData.refs.n > 0 {
		sh.onSeen(dr, &dr.anyData, dev.ID, now)
		n += int(dr.anyData.refs.n)
	}
	sh.unlockAndPublish()
	if n > 0 {
		e.metrics.evaluations.Add(float64(n))
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
	h := e.hash(d.ID)
	sh := e.shards[h&(nShards-1)]
	sh.mu.Lock()
	dr := sh.deviceRules(h, d.ID, d.Type, now)
	for _, ref := range dr.list(dr.offline) {
		st := dr.slots[ref.slot].st
		if st == nil {
			if ev.Online {
				continue
			}
			st = sh.addState(dr.rule(ref), d.ID, d.Type)
		}
		if ev.Online {
			st.offline = false
		} else if !st.offline {
			st.offline, st.offlineSince = true, now
		}
		sh.reconcile(st, now)
		sh.maybeDrop(st, now)
	}
	sh.unlockAndPublish()
}

// DeviceChanged ends the alerts of a deleted device ("device deleted");
// register it with devices.Registry.OnChange. Other changes need nothing:
// a device's labels are compared on its readings.
func (e *Engine) DeviceChanged(c devices.Change) {
	if c.Kind != devices.Deleted {
		return
	}
	now := time.Now()
	h := e.hash(c.DeviceID)
	sh := e.shards[h&(nShards-1)]
	sh.mu.Lock()
	sh.devCache.del(h, c.DeviceID)
	for k, st := range sh.states {
		if k.device == c.DeviceID {
			sh.end(st, now, "device deleted")
		}
	}
	sh.unlockAndPublish()
}

// silenced reports whether a rule is silenced at now.
func (e *Engine) silenced(ruleID string, now time.Time) bool {
	c := e.idx.Load().rules[ruleID]
	return c != nil && c.rule.silenced(now)
}

// runSilences ends rules' silences on time.
func (e *Engine) runSilences(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		e.silMu.Lock()
		var next time.Time
		for _, until := range e.silences {
			if next.IsZero() || until.Before(next) {
				next = until
			}
		}
		e.silMu.Unlock()
		var due <-chan time.Time
		if !next.IsZero() {
			t.Reset(time.Until(next))
			due = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wakeSil:
		case <-due:
			now := time.Now()
			var ended []string
			e.silMu.Lock()
			for id, until := range e.silences {
				if !now.Before(until) {
					delete(e.silences, id)
					ended = append(ended, id)
				}
			}
			e.silMu.Unlock()
			e.announceUnsilenced(ended, now)
		}
	}
}

// announceUnsilenced re-announces the firing alerts of rules whose silence
// ended, so that webhooks hear of what fired during the silence.
func (e *Engine) announceUnsilenced(ids []string, now time.Time) {
	if len(ids) == 0 {
		return
	}
	for _, sh := range e.shards {
		sh.mu.Lock()
		for _, id := range ids {
			sh.unsilenced(id, now)
		}
		sh.unlockAndPublish()
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

// describe is a short description of a rule for log lines.
func describe(r *Rule) string { return fmt.Sprintf("%s (%s)", r.ID, r.Name) }
