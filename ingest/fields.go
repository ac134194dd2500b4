package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Config bounds what one device may make the hub keep.
type Config struct {
	// MaxFieldsPerDevice is the most distinct field names a device may
	// have: every name is a series in the store, a value in the latest
	// cache and a line in the API's answers, kept for as long as the
	// device. A payload that would add names past it is refused whole.
	MaxFieldsPerDevice int `yaml:"max_fields_per_device"`
}

// DefaultConfig returns the defaults: 1,024 fields per device.
func DefaultConfig() Config { return Config{MaxFieldsPerDevice: 1024} }

// Validate checks the values.
func (c Config) Validate() error {
	if c.MaxFieldsPerDevice < 1 {
		return errors.New("ingest.max_fields_per_device must be at least 1")
	}
	return nil
}

// ErrTooManyFields is the cause of a payload refused because it would give
// its device more distinct fields than ingest.max_fields_per_device. The
// payload is not stored; a resend is refused again.
var ErrTooManyFields = errors.New("ingest: too many distinct fields for the device")

// FieldsBucket is the bucket of the state database that keeps each device's
// field names: device ID -> names, each ended by a zero byte.
var FieldsBucket = []byte("device_fields")

// Fields knows the distinct field names of every device and caps them
// (Config.MaxFieldsPerDevice). Known names cost one map lookup each under a
// read lock; a new name is added under the write lock and saved to the
// state database by a flusher goroutine (at most every flushEvery), so the
// cap survives restarts without a disk write on the publishing goroutine.
// Safe for concurrent use.
type Fields struct {
	max      int
	db       *bolt.DB // nil: not persisted
	logger   *slog.Logger
	onForget func(dev string) // nil: none; called by the saving goroutine

	mu    sync.RWMutex
	devs  map[string]map[string]struct{}
	dirty map[string]bool // device -> changed (true) or forgotten (false) since the last save

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// fieldsFlushEvery is the longest a new name waits to be saved.
const fieldsFlushEvery = time.Second

// NewFields returns the field index of a hub with max fields per device,
// loaded from db (nil keeps it in memory only). fresh is true when db had no
// field index yet (a first start, or an upgrade): the caller may then seed it
// from the store (Seed). Call Start to save changes, Stop to save the rest.
func NewFields(db *bolt.DB, max int, logger *slog.Logger) (f *Fields, fresh bool, err error) {
	f = &Fields{max: max, db: db, logger: logger, devs: map[string]map[string]struct{}{}, dirty: map[string]bool{},
		kick: make(chan struct{}, 1)}
	if db == nil {
		return f, true, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(FieldsBucket)
		if b == nil {
			fresh = true
			_, err := tx.CreateBucket(FieldsBucket)
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			set := map[string]struct{}{}
			for name := range bytes.SplitSeq(v, []byte{0}) {
				if len(name) > 0 {
					set[string(name)] = struct{}{}
				}
			}
			f.devs[string(k)] = set
			return nil
		})
	})
	if err != nil {
		return nil, false, fmt.Errorf("load field index: %w", err)
	}
	return f, fresh, nil
}

// Seed adds names a device is known to have (from the store), whatever the
// cap: they exist already. For a field index that starts fresh.
func (f *Fields) Seed(dev string, names []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := f.devs[dev]
	if set == nil {
		set = make(map[string]struct{}, len(names))
		f.devs[dev] = set
	}
	for _, n := range names {
		set[n] = struct{}{}
	}
	f.dirty[dev] = true
}

// Admit checks the fields of a device's points against its known names and
// the cap: known names pass, new names are added while the device stays
// within the cap, and a payload that would take it past the cap is refused
// whole (nothing is added) with an error wrapping ErrTooManyFields.
func (f *Fields) Admit(dev string, pts []Point) error {
	f.mu.RLock()
	set := f.devs[dev]
	known := set != nil
	for i := 0; known && i < len(pts); i++ {
		for _, fd := range pts[i].Fields {
			if _, ok := set[fd.Name]; !ok {
				known = false
				break
			}
		}
	}
	f.mu.RUnlock()
	if known {
		return nil
	}
	return f.add(dev, pts)
}

// add admits a payload with names not known yet, under the write lock.
func (f *Fields) add(dev string, pts []Point) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := f.devs[dev]
	fresh := map[string]struct{}{} // a set: a refused flood may name thousands
	for _, pt := range pts {
		for _, fd := range pt.Fields {
			if _, ok := set[fd.Name]; ok {
				continue
			}
			if _, ok := fresh[fd.Name]; !ok {
				fresh[fd.Name] = struct{}{}
				if len(set)+len(fresh) > f.max {
					return fmt.Errorf("%w: it has %d of at most %d (ingest.max_fields_per_device) and the payload adds new ones such as %q",
						ErrTooManyFields, len(set), f.max, fd.Name)
				}
			}
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if set == nil {
		set = make(map[string]struct{}, len(fresh))
		f.devs[dev] = set
	}
	for n := range fresh {
		// Decoded names share the payload's buffer: keep a copy.
		set[strings.Clone(n)] = struct{}{}
	}
	f.dirty[dev] = true
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return nil
}

// Count returns how many distinct fields a device has.
func (f *Fields) Count(dev string) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.devs[dev])
}

// OnForget registers fn, called on the saving goroutine (not the caller of
// Forget) once a forgotten device's names are gone from the state
// database: for slower clean-up such as the embedded store's. Call it
// before Start.
func (f *Fields) OnForget(fn func(dev string)) { f.onForget = fn }

// Forget drops a device's field names (the device was deleted).
func (f *Fields) Forget(dev string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devs[dev]; !ok {
		return
	}
	delete(f.devs, dev)
	f.dirty[dev] = false
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Start runs the goroutine that saves changes, until Stop.
func (f *Fields) Start(ctx context.Context) {
	if f.db == nil {
		return
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Go(func() {
		for {
			select {
			case <-f.kick:
			case <-ctx.Done():
				return
			}
			f.save()
			t := time.NewTimer(fieldsFlushEvery) // gather the names of a burst into one transaction
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	})
}

// Stop saves what changed and stops the saving goroutine. Safe to call
// twice.
func (f *Fields) Stop() {
	f.once.Do(func() {
		if f.cancel != nil {
			f.cancel()
			f.wg.Wait()
		}
		if f.db != nil {
			f.save()
		}
	})
}

// save writes the devices that changed since the last save in one
// transaction. A failed write is tried again with the next change.
func (f *Fields) save() {
	f.mu.Lock()
	if len(f.dirty) == 0 {
		f.mu.Unlock()
		return
	}
	dirty := f.dirty
	f.dirty = map[string]bool{}
	vals := make(map[string][]byte, len(dirty))
	for dev, changed := range dirty {
		if !changed {
			continue
		}
		var v []byte
		for n := range f.devs[dev] {
			v = append(append(v, n...), 0)
		}
		vals[dev] = v
	}
	f.mu.Unlock()
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(FieldsBucket)
		for dev, changed := range dirty {
			var err error
			if changed {
				err = b.Put([]byte(dev), vals[dev])
			} else {
				err = b.Delete([]byte(dev))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && f.onForget != nil {
		for dev, changed := range dirty {
			if !changed {
				f.onForget(dev)
			}
		}
	}
	if err != nil {
		f.logger.Error("save the field index", "err", err, "devices", len(dirty))
		f.mu.Lock()
		for dev, changed := range dirty {
			if _, newer := f.dirty[dev]; !newer {
				f.dirty[dev] = changed
			}
		}
		f.mu.Unlock()
	}
}
