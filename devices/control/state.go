package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/internal/live"
	"github.com/telehub/telehub/internal/wal"
)

// ErrVersionConflict means the desired state changed since the version the
// caller based its change on.
var ErrVersionConflict = errors.New("desired state version does not match")

// errStatesStopped fails the reports not yet stored when States stops.
var errStatesStopped = errors.New("device state stopped before the report was stored")

// flushRetry is how long the flusher waits to write again after a failed
// write, when no new report wakes it sooner.
const flushRetry = time.Second

// StateConfig configures desired and reported state.
type StateConfig struct {
	// MaxBytes bounds one desired or reported state document (JSON).
	MaxBytes int `yaml:"max_bytes"`
}

// DefaultStateConfig returns the defaults.
func DefaultStateConfig() StateConfig { return StateConfig{MaxBytes: 64 << 10} }

// Validate checks the values.
func (c StateConfig) Validate() error {
	if c.MaxBytes < 256 {
		return errors.New("state.max_bytes must be at least 256")
	}
	return nil
}

// State is a device's desired and reported state and the difference
// between them.
type State struct {
	DeviceID string `json:"device_id"`
	// Desired is what operators want; DesiredVersion counts its changes.
	Desired        map[string]any `json:"desired"`
	DesiredVersion uint64         `json:"desired_version"`
	DesiredAt      *time.Time     `json:"desired_at,omitempty"`
	DesiredBy      string         `json:"desired_by,omitempty"`
	// Reported is what the device last said on devices/{id}/state;
	// ReportedVersion counts its changes, ReportedAt is the last report.
	Reported        map[string]any `json:"reported"`
	ReportedVersion uint64         `json:"reported_version"`
	ReportedAt      *time.Time     `json:"reported_at,omitempty"`
	// Delta holds the desired values the device does not report (yet);
	// nested objects are compared member by member.
	Delta  map[string]any `json:"delta"`
	InSync bool           `json:"in_sync"`
}

// stateRecord is the persisted form; documents are kept as JSON.
type stateRecord struct {
	Desired         json.RawMessage `json:"desired,omitempty"`
	DesiredVersion  uint64          `json:"desired_version"`
	DesiredAt       *time.Time      `json:"desired_at,omitempty"`
	DesiredBy       string          `json:"desired_by,omitempty"`
	Reported        json.RawMessage `json:"reported,omitempty"`
	ReportedVersion uint64          `json:"reported_version"`
	ReportedAt      *time.Time      `json:"reported_at,omitempty"`

	desired, reported map[string]any // decoded
}

func (r *stateRecord) view(id string) State {
	st := State{DeviceID: id, Desired: r.desired, DesiredVersion: r.DesiredVersion, DesiredAt: r.DesiredAt,
		DesiredBy: r.DesiredBy, Reported: r.reported, ReportedVersion: r.ReportedVersion, ReportedAt: r.ReportedAt}
	if st.Desired == nil {
		st.Desired = map[string]any{}
	}
	if st.Reported == nil {
		st.Reported = map[string]any{}
	}
	st.Delta = Delta(st.Desired, st.Reported)
	st.InSync = len(st.Delta) == 0
	return st
}

// Delta returns the members of desired that reported lacks or holds with
// another value; objects present on both sides are compared recursively.
// A desired null is satisfied by a missing member.
func Delta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		dm, dObj := dv.(map[string]any)
		rm, rObj := rv.(map[string]any)
		switch {
		case dObj && rObj:
			if sub := Delta(dm, rm); len(sub) > 0 {
				out[k] = sub
			}
		case !ok:
			if dv != nil {
				out[k] = dv
			}
		case !jsonEqual(dv, rv):
			out[k] = dv
		}
	}
	return out
}

// DesiredPublisher publishes a device's desired state retained on
// devices/{id}/state/desired.
type DesiredPublisher interface {
	PublishDesired(deviceID string, payload []byte) error
}

var stateBucket = []byte("device_state")

// States keeps devices' desired and reported state, persisted in the hub's
// state database and cached in memory. Desired changes are written before
// they are acknowledged; reported changes (from the broker, on the device's
// goroutine) are applied in memory at once and written by a background
// flusher, the latest per device winning; the reports between two flushes
// share one commit, complete when the flush's transaction is, which the
// broker waits for before it acknowledges them. Safe for concurrent use.
type States struct {
	cfg  StateConfig
	db   *bolt.DB
	reg  DeviceLookup
	live LivePublisher
	log  *slog.Logger

	reports, rejected, storeErrors prometheus.Counter

	writeMu sync.Mutex // orders writes: a later write holds a later snapshot
	pubMu   sync.Mutex // orders desired publishes: the last one is the newest
	mu      sync.RWMutex
	recs    map[string]*stateRecord
	dirty   map[string]struct{}
	repub   map[string]struct{}
	forget  map[string]struct{} // deleted devices
	// open is the commit the reports since the flusher's last snapshot
	// share (none yet while openDone is nil); carried are the completions
	// of flushes that failed, completed by the next one that succeeds.
	open     wal.Commit
	openDone func(error)
	carried  []func(error)
	stopped  bool

	wake       chan struct{}
	onReported atomic.Pointer[func(deviceID string)]
	pub        DesiredPublisher
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	once       sync.Once
}

// NewStates loads the states from their bucket in db.
func NewStates(cfg StateConfig, db *bolt.DB, reg DeviceLookup, pub LivePublisher, mr prometheus.Registerer, log *slog.Logger) (*States, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mr == nil {
		mr = prometheus.NewRegistry()
	}
	f := promauto.With(mr)
	s := &States{cfg: cfg, db: db, reg: reg, live: pub, log: log, recs: map[string]*stateRecord{},
		dirty: map[string]struct{}{}, repub: map[string]struct{}{}, forget: map[string]struct{}{}, wake: make(chan struct{}, 1),
		reports:     f.NewCounter(prometheus.CounterOpts{Name: "telehub_state_reports_total", Help: "Reported state documents accepted from devices."}),
		rejected:    f.NewCounter(prometheus.CounterOpts{Name: "telehub_state_reports_rejected_total", Help: "Reported state documents refused (not a JSON object, too large)."}),
		storeErrors: f.NewCounter(prometheus.CounterOpts{Name: "telehub_state_store_errors_total", Help: "Failed writes of device state (retried)."}),
	}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(stateBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			r := &stateRecord{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("state of %q: %w", k, err)
			}
			if r.desired, err = decodeObject(r.Desired); err != nil {
				return fmt.Errorf("desired state of %q: %w", k, err)
			}
			if r.reported, err = decodeObject(r.Reported); err != nil {
				return fmt.Errorf("reported state of %q: %w", k, err)
			}
			s.recs[string(k)] = r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load device state: %w", err)
	}
	return s, nil
}

func decodeObject(b json.RawMessage) (map[string]any, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	v, err := decodeJSON(b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// Start publishes every desired state (retained messages do not outlive the
// broker) and runs the flusher until Stop.
func (s *States) Start(ctx context.Context, pub DesiredPublisher) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.mu.Lock()
	s.pub = pub
	for id, r := range s.recs {
		if r.DesiredVersion > 0 {
			s.repub[id] = struct{}{}
		}
	}
	s.mu.Unlock()
	s.signal()
	s.wg.Go(func() { s.run(ctx) })
}

// Stop ends the flusher after writing what is pending. Safe to call twice.
func (s *States) Stop() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		s.mu.Lock()
		s.stopped = true
		done := append(s.carried, s.openDone)
		s.carried, s.openDone = nil, nil
		s.mu.Unlock()
		complete(done, errStatesStopped)
	})
}

// complete completes commits' completions (nil ones skipped).
func complete(done []func(error), err error) {
	for _, fn := range done {
		if fn != nil {
			fn(err)
		}
	}
}

func (s *States) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *States) run(ctx context.Context) {
	retry := time.NewTimer(flushRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return
		case <-s.wake:
		case <-retry.C:
		}
		if !s.flush() {
			retry.Reset(flushRetry)
		}
		s.mu.Lock()
		ids, gone := s.repub, s.forget
		s.repub, s.forget = map[string]struct{}{}, map[string]struct{}{}
		s.mu.Unlock()
		for id := range ids {
			s.publishDesired(id)
		}
		s.drop(gone)
	}
}

// flush writes the dirty records in one transaction, then completes the
// commit of the reports they hold. It reports whether the write succeeded
// (or there was nothing to write).
func (s *States) flush() bool {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	done := append(s.carried, s.openDone)
	s.carried, s.open, s.openDone = nil, wal.Commit{}, nil
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		complete(done, nil) // a deleted device's reports: nothing to keep
		return true
	}
	vals := make(map[string][]byte, len(s.dirty))
	for id := range s.dirty {
		if v, err := json.Marshal(s.recs[id]); err == nil {
			vals[id] = v
		}
	}
	clear(s.dirty)
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(stateBucket)
		for id, v := range vals {
			if err := b.Put([]byte(id), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.storeErrors.Inc()
		s.log.Error("store reported state; retrying", "devices", len(vals), "err", err)
		s.mu.Lock()
		for id := range vals {
			if _, ok := s.recs[id]; ok {
				s.dirty[id] = struct{}{}
			}
		}
		s.carried = append(s.carried, done...)
		s.mu.Unlock()
		return false
	}
	complete(done, nil)
	return true
}

// Get returns a device's state; ok is false for an unknown device.
func (s *States) Get(deviceID string) (State, bool) {
	if _, ok := s.reg.Get(deviceID); !ok {
		return State{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.recs[deviceID]
	if r == nil {
		r = &stateRecord{}
	}
	return r.view(deviceID), true
}

// SetDesired replaces a device's desired state (a JSON object). With
// ifVersion set, the change is made only if the current desired version is
// that one (else ErrVersionConflict). The change is stored before it
// returns, then published retained to the device and on the live stream.
func (s *States) SetDesired(deviceID string, desired json.RawMessage, ifVersion *uint64, by string) (State, error) {
	if _, ok := s.reg.Get(deviceID); !ok {
		return State{}, devices.ErrNotFound
	}
	if len(desired) > s.cfg.MaxBytes {
		return State{}, &devices.ValidationError{Msg: fmt.Sprintf("desired state: larger than %d bytes", s.cfg.MaxBytes)}
	}
	doc, err := decodeObject(desired)
	if err != nil || doc == nil {
		return State{}, &devices.ValidationError{Msg: "desired state: must be a JSON object"}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, desired); err != nil {
		return State{}, &devices.ValidationError{Msg: "desired state: " + err.Error()}
	}

	s.writeMu.Lock()
	s.mu.RLock()
	cur := s.recs[deviceID]
	next := stateRecord{}
	if cur != nil {
		next = *cur
	}
	s.mu.RUnlock()
	if ifVersion != nil && *ifVersion != next.DesiredVersion {
		s.writeMu.Unlock()
		return State{}, fmt.Errorf("%w: it is at version %d", ErrVersionConflict, next.DesiredVersion)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	next.Desired, next.desired = compact.Bytes(), doc
	next.DesiredVersion++
	next.DesiredAt, next.DesiredBy = &now, by
	v, err := json.Marshal(&next)
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(stateBucket).Put([]byte(deviceID), v) })
	}
	if err != nil {
		s.writeMu.Unlock()
		s.storeErrors.Inc()
		return State{}, fmt.Errorf("store desired state: %w", err)
	}
	s.mu.Lock()
	r := s.recs[deviceID]
	if r == nil {
		r = &stateRecord{}
		s.recs[deviceID] = r
	}
	// Only the desired half: a report may have landed since the snapshot.
	r.Desired, r.desired, r.DesiredVersion, r.DesiredAt, r.DesiredBy =
		next.Desired, next.desired, next.DesiredVersion, next.DesiredAt, next.DesiredBy
	view := r.view(deviceID)
	s.mu.Unlock()
	s.writeMu.Unlock()

	// The event goes first: the device's report of the new state follows
	// it on the stream. Events carry both versions for ordering concurrent
	// changes.
	s.emit(view, now)
	s.publishDesired(deviceID)
	return view, nil
}

// Reported takes a state document a device published on devices/{id}/state.
// It must be a JSON object of at most StateConfig.MaxBytes. Only a change
// bumps the reported version and goes to the live stream. The returned
// commit completes once the report is in the state database (the
// flusher's transaction that wrote it is committed), or fails if States
// stops first: the broker acknowledges the report only then.
func (s *States) Reported(deviceID string, payload []byte, at time.Time) (wal.Commit, error) {
	if len(payload) > s.cfg.MaxBytes {
		s.rejected.Inc()
		return wal.Commit{}, fmt.Errorf("reported state: larger than %d bytes", s.cfg.MaxBytes)
	}
	doc, err := decodeObject(payload)
	if err != nil || doc == nil {
		s.rejected.Inc()
		return wal.Commit{}, errors.New("reported state: must be a JSON object")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, payload); err != nil {
		s.rejected.Inc()
		return wal.Commit{}, fmt.Errorf("reported state: %w", err)
	}
	s.reports.Inc()
	at = at.UTC().Truncate(time.Millisecond)
	s.mu.Lock()
	r := s.recs[deviceID]
	if r == nil {
		r = &stateRecord{}
		s.recs[deviceID] = r
	}
	changed := r.ReportedVersion == 0 || !jsonEqual(r.reported, doc)
	if changed {
		r.Reported, r.reported = compact.Bytes(), doc
		r.ReportedVersion++
	}
	r.ReportedAt = &at
	s.dirty[deviceID] = struct{}{}
	var view State
	if changed {
		view = r.view(deviceID)
	}
	if s.openDone == nil && !s.stopped {
		s.open, s.openDone = wal.NewCommit()
	}
	cm, stopped := s.open, s.stopped
	s.mu.Unlock()
	if stopped {
		cm, fail := wal.NewCommit()
		fail(errStatesStopped)
		return cm, nil
	}
	s.signal()
	if changed {
		s.emit(view, at)
		if fn := s.onReported.Load(); fn != nil {
			(*fn)(deviceID)
		}
	}
	return cm, nil
}

// OnReported sets fn to be called, without blocking, with the ID of each
// device whose reported state changed (the upstream forwarder). One
// listener; a later call replaces it.
func (s *States) OnReported(fn func(deviceID string)) { s.onReported.Store(&fn) }

// ReportedDevices lists the devices that have reported a state.
func (s *States) ReportedDevices() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	for id, r := range s.recs {
		if len(r.Reported) > 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// Forget drops the state of a deleted device, and its retained desired
// state, so that a new device under the same ID inherits nothing. It does
// not block.
func (s *States) Forget(deviceID string) {
	s.mu.Lock()
	s.forget[deviceID] = struct{}{}
	s.mu.Unlock()
	s.signal()
}

// drop deletes the records of deleted devices and clears their retained
// desired state (an empty retained message).
func (s *States) drop(ids map[string]struct{}) {
	if len(ids) == 0 {
		return
	}
	s.writeMu.Lock()
	s.mu.Lock()
	for id := range ids {
		delete(s.recs, id)
		delete(s.dirty, id)
		delete(s.repub, id)
	}
	pub := s.pub
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(stateBucket)
		for id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	s.writeMu.Unlock()
	if err != nil {
		s.storeErrors.Inc()
		s.log.Warn("delete state of deleted devices", "devices", len(ids), "err", err)
	}
	if pub == nil {
		return
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	for id := range ids {
		if err := pub.PublishDesired(id, nil); err != nil {
			s.log.Warn("clear retained desired state", "device_id", id, "err", err)
		}
	}
}

// RetainedExpired tells that the broker dropped the retained desired state
// of a device (mochi expires retained messages); it is published again.
func (s *States) RetainedExpired(deviceID string) {
	s.mu.Lock()
	if r := s.recs[deviceID]; r != nil && r.DesiredVersion > 0 {
		s.repub[deviceID] = struct{}{}
	}
	s.mu.Unlock()
	s.signal()
}

// DesiredMessage is the payload published on devices/{id}/state/desired.
type DesiredMessage struct {
	Version   uint64         `json:"version"`
	State     map[string]any `json:"state"`
	UpdatedAt *time.Time     `json:"updated_at,omitempty"`
}

// publishDesired publishes the current desired state of a device; pubMu
// makes the last publish carry the newest version.
func (s *States) publishDesired(deviceID string) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.mu.RLock()
	r, pub := s.recs[deviceID], s.pub
	var msg DesiredMessage
	if r != nil {
		msg = DesiredMessage{Version: r.DesiredVersion, State: r.desired, UpdatedAt: r.DesiredAt}
	}
	s.mu.RUnlock()
	if pub == nil || r == nil || msg.Version == 0 {
		return // Start publishes it
	}
	if msg.State == nil {
		msg.State = map[string]any{}
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return
	}
	if err := pub.PublishDesired(deviceID, b); err != nil {
		s.log.Warn("publish desired state", "device_id", deviceID, "err", err)
	}
}

func (s *States) emit(st State, at time.Time) {
	if s.live == nil {
		return
	}
	if m, err := live.Event(live.KindState, st.DeviceID, at, st); err == nil {
		s.live.Publish(m)
	}
}
