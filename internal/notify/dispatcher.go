package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/internal/live"
)

// Stream is the live fan-out the dispatcher reads events from.
type Stream interface {
	Read(after uint64, buf []live.Message, max int) ([]live.Message, uint64)
	Changed() <-chan struct{}
	Last() uint64
}

// Deps are the parts of the hub the dispatcher works with.
type Deps struct {
	// DB is the hub's state database; webhooks and their outbox live in
	// buckets of their own.
	DB     *bolt.DB
	Stream Stream
	// Metrics may be nil.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// ErrNotFound is returned for an unknown webhook ID.
var ErrNotFound = errors.New("webhook not found")

// maxWebhooks bounds the registered webhooks; each has a worker goroutine.
const maxWebhooks = 256

// readBatch is how many live messages the reader takes at a time.
const readBatch = 1024

// Dispatcher keeps the webhooks and delivers events to them. One reader
// goroutine follows the live stream and turns each matching event into a
// delivery in the outbox (a bbolt bucket per webhook, in event order); one
// worker goroutine per webhook sends its deliveries in order, one at a time,
// retrying with backoff, and removes each once the receiver answered 2xx.
// Safe for concurrent use.
type Dispatcher struct {
	cfg     Config
	policy  Policy
	db      *bolt.DB
	stream  Stream
	client  *http.Client
	log     *slog.Logger
	metrics dispatchMetrics

	mu      sync.Mutex
	hooks   map[string]*hook
	changed chan struct{} // the set of enabled webhooks changed

	readCancel context.CancelFunc
	workCtx    context.Context
	workCancel context.CancelFunc
	readWG     sync.WaitGroup
	cursor     uint64 // where the reader stopped; written by it before readWG is done
	workWG     sync.WaitGroup
	stopOnce   sync.Once
}

// hook is a webhook and its worker. w is guarded by Dispatcher.mu.
type hook struct {
	w      Webhook
	secret string
	wake   chan struct{}
	cancel context.CancelFunc // stops the worker; nil when none runs
	done   chan struct{}      // closed when the worker has stopped
}

type dispatchMetrics struct {
	delivered, failed                 prometheus.Counter
	expired, overflow, droppedDisable prometheus.Counter
	missed                            prometheus.Counter
}

// The dispatcher's buckets in the state database.
var (
	webhooksBucket = []byte("webhooks")
	outboxBucket   = []byte("webhook_outbox")
)

// New loads the webhooks and their outbox. Call Start to deliver.
func New(cfg Config, deps Deps) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := deps.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	d := &Dispatcher{cfg: cfg, policy: NewPolicy(cfg), db: deps.DB, stream: deps.Stream, log: deps.Logger,
		hooks: map[string]*hook{}, changed: make(chan struct{}, 1)}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: d.policy.control}
	d.client = &http.Client{
		Timeout: cfg.Timeout,
		// Proxy stays nil: a proxy would dial on our behalf, past the policy.
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: cfg.Timeout,
			MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true},
		// A redirect could lead anywhere; the policy judged this URL only.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	f := promauto.With(reg)
	deliveries := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_webhook_deliveries_total", Help: "Webhook delivery attempts, by result."}, []string{"result"})
	dropped := f.NewCounterVec(prometheus.CounterOpts{Name: "telehub_webhook_dropped_total", Help: "Webhook deliveries given up, by reason."}, []string{"reason"})
	d.metrics = dispatchMetrics{
		delivered:      deliveries.WithLabelValues("delivered"),
		failed:         deliveries.WithLabelValues("failed"),
		expired:        dropped.WithLabelValues("expired"),
		overflow:       dropped.WithLabelValues("outbox_full"),
		droppedDisable: dropped.WithLabelValues("disabled"),
		missed:         f.NewCounter(prometheus.CounterOpts{Name: "telehub_webhook_events_missed_total", Help: "Live stream events the webhook reader fell too far behind to see."}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_webhook_pending", Help: "Webhook deliveries waiting in the outbox."}, func() float64 {
		n := 0
		for _, w := range d.List() {
			n += w.Status.Pending
		}
		return float64(n)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_webhooks_disabled", Help: "Webhooks disabled because they kept failing."}, func() float64 {
		n := 0
		for _, w := range d.List() {
			if w.Disabled {
				n++
			}
		}
		return float64(n)
	})
	err := d.db.Update(func(tx *bolt.Tx) error {
		wb, err := tx.CreateBucketIfNotExists(webhooksBucket)
		if err != nil {
			return err
		}
		ob, err := tx.CreateBucketIfNotExists(outboxBucket)
		if err != nil {
			return err
		}
		return wb.ForEach(func(k, v []byte) error {
			var s stored
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("webhook %q: %w", k, err)
			}
			h := &hook{w: s.Webhook, secret: s.Secret, wake: make(chan struct{}, 1)}
			h.w.Status.Pending = 0
			if b := ob.Bucket(k); b != nil {
				h.w.Status.Pending = countKeys(b)
			}
			d.hooks[s.ID] = h
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load webhooks: %w", err)
	}
	return d, nil
}

// Start starts the reader, at the live stream's current end, and the
// workers; they run until ctx ends or Stop.
func (d *Dispatcher) Start(ctx context.Context) {
	var rctx context.Context
	rctx, d.readCancel = context.WithCancel(ctx)
	d.workCtx, d.workCancel = context.WithCancel(ctx)
	d.mu.Lock()
	for _, h := range d.hooks {
		if !h.w.Disabled {
			d.startWorker(h)
		}
	}
	d.mu.Unlock()
	after := d.stream.Last()
	d.readWG.Go(func() { d.cursor = d.read(rctx, after) })
}

// Stop stops reading after turning every event already published into
// deliveries, then stops the workers; an attempt in flight is abandoned
// and made again after a restart. Safe to call twice.
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() {
		if d.readCancel == nil {
			return
		}
		d.readCancel()
		d.readWG.Wait()
		// Events published since the reader stopped (the hub may have
		// been cancelled before its last parts stopped) are filed too.
		d.drain(d.cursor)
		d.workCancel()
		d.workWG.Wait()
	})
}

// startWorker starts h's delivery goroutine. Called with mu held.
func (d *Dispatcher) startWorker(h *hook) {
	if d.workCtx == nil || h.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(d.workCtx)
	h.cancel, h.done = cancel, make(chan struct{})
	done := h.done
	d.workWG.Go(func() {
		defer close(done)
		d.work(ctx, h)
	})
}

// Create registers a webhook after checking its URL against the policy. It
// returns the webhook and its secret, which is not shown again. Errors:
// *ValidationError.
func (d *Dispatcher) Create(ctx context.Context, s Spec, by string) (Webhook, string, error) {
	if err := s.normalize(); err != nil {
		return Webhook{}, "", err
	}
	if err := d.policy.CheckURL(ctx, s.URL); err != nil {
		return Webhook{}, "", &ValidationError{"url: " + err.Error()}
	}
	if s.Secret == "" {
		b := make([]byte, 24)
		rand.Read(b)
		s.Secret = "whsec_" + hex.EncodeToString(b)
	}
	id := make([]byte, 6)
	rand.Read(id)
	h := &hook{secret: s.Secret, wake: make(chan struct{}, 1), w: Webhook{ID: "wh-" + hex.EncodeToString(id), URL: s.URL,
		Events: s.Events, Description: s.Description, CreatedAt: time.Now().UTC().Truncate(time.Millisecond), CreatedBy: by}}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.hooks) >= maxWebhooks {
		return Webhook{}, "", &ValidationError{fmt.Sprintf("at most %d webhooks", maxWebhooks)}
	}
	if err := d.db.Update(func(tx *bolt.Tx) error { return putWebhook(tx, h) }); err != nil {
		return Webhook{}, "", fmt.Errorf("store webhook: %w", err)
	}
	d.hooks[h.w.ID] = h
	d.startWorker(h)
	signal(d.changed)
	return h.w.clone(), s.Secret, nil
}

func putWebhook(tx *bolt.Tx, h *hook) error {
	v, err := json.Marshal(stored{Webhook: h.w, Secret: h.secret})
	if err != nil {
		return err
	}
	return tx.Bucket(webhooksBucket).Put([]byte(h.w.ID), v)
}

// List returns the webhooks ordered by creation.
func (d *Dispatcher) List() []Webhook {
	d.mu.Lock()
	out := make([]Webhook, 0, len(d.hooks))
	for _, h := range d.hooks {
		out = append(out, h.w.clone())
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b Webhook) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Get returns one webhook.
func (d *Dispatcher) Get(id string) (Webhook, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hooks[id]
	if !ok {
		return Webhook{}, false
	}
	return h.w.clone(), true
}

// Delete removes a webhook and its pending deliveries.
func (d *Dispatcher) Delete(id string) error {
	d.mu.Lock()
	h, ok := d.hooks[id]
	if ok {
		delete(d.hooks, id)
	}
	d.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	d.stopWorker(h)
	err := d.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(outboxBucket).DeleteBucket([]byte(id)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		return tx.Bucket(webhooksBucket).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	return nil
}

func (d *Dispatcher) stopWorker(h *hook) {
	d.mu.Lock()
	cancel, done := h.cancel, h.done
	h.cancel = nil
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Enable enables a disabled webhook again; deliveries resume with the
// events that follow.
func (d *Dispatcher) Enable(id string) (Webhook, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hooks[id]
	if !ok {
		return Webhook{}, ErrNotFound
	}
	if h.w.Disabled {
		w := h.w
		w.Disabled, w.DisabledReason, w.DisabledAt, w.Status.FailingSince = false, "", nil, nil
		nh := *h
		nh.w = w
		if err := d.db.Update(func(tx *bolt.Tx) error { return putWebhook(tx, &nh) }); err != nil {
			return Webhook{}, fmt.Errorf("store webhook: %w", err)
		}
		h.w = w
		d.startWorker(h)
		signal(d.changed)
	}
	return h.w.clone(), nil
}

// read follows the live stream and files a delivery for every event a
// webhook subscribes to. When ctx ends it files what was published up to
// then and returns where it stopped.
func (d *Dispatcher) read(ctx context.Context, after uint64) uint64 {
	buf := make([]live.Message, 0, readBatch)
	for {
		ch := d.stream.Changed()
		if !d.anyEnabled() {
			// Nothing to deliver to: skip ahead instead of reading.
			after = d.stream.Last()
			select {
			case <-d.changed:
				continue
			case <-ctx.Done():
				return after
			}
		}
		msgs, missed := d.stream.Read(after, buf[:0], readBatch)
		if missed > 0 {
			d.metrics.missed.Add(float64(missed))
			d.log.Warn("webhook reader fell behind the live stream; events lost for webhooks", "missed", missed)
		}
		if len(msgs) > 0 {
			after = msgs[len(msgs)-1].Seq
			d.file(msgs)
			continue
		}
		select {
		case <-ch:
		case <-d.changed:
		case <-ctx.Done():
			if d.stream.Last() > after {
				continue // publish raced the stop: file it first
			}
			return after
		}
	}
}

// drain files the events published after cursor, once the reader has
// stopped.
func (d *Dispatcher) drain(after uint64) {
	buf := make([]live.Message, 0, readBatch)
	for {
		msgs, _ := d.stream.Read(after, buf[:0], readBatch)
		if len(msgs) == 0 {
			return
		}
		after = msgs[len(msgs)-1].Seq
		d.file(msgs)
	}
}

func (d *Dispatcher) anyEnabled() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.hooks {
		if !h.w.Disabled {
			return true
		}
	}
	return false
}

// delivery is one event on its way to one webhook.
type delivery struct {
	EventID   string          `json:"event_id"`
	Kind      string          `json:"kind"`
	Body      json.RawMessage `json:"body"`
	CreatedAt time.Time       `json:"created_at"`
	Attempts  int             `json:"attempts"`
	NextAt    time.Time       `json:"next_at"`
	LastError string          `json:"last_error,omitempty"`
}

// file turns messages into deliveries, written in one transaction.
func (d *Dispatcher) file(msgs []live.Message) {
	d.mu.Lock()
	hooks := make([]*hook, 0, len(d.hooks))
	for _, h := range d.hooks {
		if !h.w.Disabled {
			hooks = append(hooks, h)
		}
	}
	wants := make(map[*hook][]string, len(hooks))
	for _, h := range hooks {
		wants[h] = h.w.Events
	}
	d.mu.Unlock()
	now := time.Now().UTC()
	add := map[*hook][]delivery{}
	for _, m := range msgs {
		if m.Kind == live.KindReading {
			continue
		}
		targets, silenced := routing(m)
		if silenced {
			continue
		}
		var dl *delivery
		for _, h := range hooks {
			if !slices.Contains(wants[h], m.Kind) || targets != nil && !slices.Contains(targets, h.w.ID) {
				continue
			}
			if dl == nil {
				dl = newDelivery(m, now)
			}
			add[h] = append(add[h], *dl)
		}
	}
	if len(add) == 0 {
		return
	}
	if err := d.append(add); err != nil {
		d.log.Error("webhook deliveries not filed; events lost for webhooks", "err", err)
		return
	}
	for h := range add {
		signal(h.wake)
	}
}

func newDelivery(m live.Message, now time.Time) *delivery {
	b := make([]byte, 12)
	rand.Read(b)
	id := "evt_" + hex.EncodeToString(b)
	body := make([]byte, 0, len(m.Body)+40)
	body = append(body, `{"id":"`...)
	body = append(body, id...)
	body = append(body, '"')
	if len(m.Body) > 2 {
		body = append(body, ',')
		body = append(body, m.Body[1:]...)
	} else {
		body = append(body, '}')
	}
	return &delivery{EventID: id, Kind: m.Kind, Body: body, CreatedAt: now, NextAt: now}
}

// routing reads the delivery hints an event may carry in its payload:
// "silenced":true (deliver to nobody) and "targets":[webhook IDs] (deliver
// only to those). Alert events use them for silenced rules and rules that
// name their webhooks.
func routing(m live.Message) (targets []string, silenced bool) {
	if !bytes.Contains(m.Body, []byte(`"silenced":true`)) && !bytes.Contains(m.Body, []byte(`"targets"`)) {
		return nil, false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(m.Body, &top) != nil {
		return nil, false
	}
	var p struct {
		Silenced bool     `json:"silenced"`
		Targets  []string `json:"targets"`
	}
	if json.Unmarshal(top[m.Kind], &p) != nil {
		return nil, false
	}
	return p.Targets, p.Silenced
}

// signal wakes a goroutine waiting on ch (buffered 1) without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
