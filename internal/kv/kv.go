// Package kv owns the hub's small key-value tables: a bucket of JSON values
// by string key, loaded into memory once and written through on every
// change, so that reads (an authentication on connect, an ACL check, a
// command's schema) never touch the disk. Table is the contract; Bolt
// implements it over a bucket of the hub's state database (bbolt), and a
// cluster implements it over a NATS key-value bucket.
package kv

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Table is a set of values of type V by key, with every change durable
// before it is visible: a Get never returns a value that a crash could
// lose. Implementations are safe for concurrent use.
type Table[V any] interface {
	// Get returns the value of key.
	Get(key string) (V, bool)
	// All returns every entry, ordered by key.
	All() []Entry[V]
	// Put stores v under key, replacing any value.
	Put(key string, v V) error
	// Update reads, changes and writes one key without another write in
	// between: fn gets the current value (ok false when there is none) and
	// returns the new one, or an error that Update returns as it is,
	// changing nothing. fn may read the table but must not change it.
	Update(key string, fn func(old V, ok bool) (V, error)) (V, error)
	// Delete removes key and reports whether it was there.
	Delete(key string) (bool, error)
}

// Entry is one key and its value.
type Entry[V any] struct {
	Key   string
	Value V
}

var _ Table[int] = (*Bolt[int])(nil)

// Bolt is a Table over one bucket of a bbolt database: the values are
// JSON-encoded under their keys, the bucket is loaded into a map when the
// table opens and each change is written to the database first, then to
// the map. Writers take turns (bbolt has one writer at a time anyway);
// readers never wait for the disk. Safe for concurrent use.
type Bolt[V any] struct {
	db     *bolt.DB
	bucket []byte

	wmu sync.Mutex // orders the writers: held across a disk write, never by a reader

	mu sync.RWMutex // guards m; held only for map operations
	m  map[string]V
}

// OpenBolt creates the bucket in db unless it exists and loads every value
// in it. A value that does not decode as V is an error naming its key.
func OpenBolt[V any](db *bolt.DB, bucket string) (*Bolt[V], error) {
	t := &Bolt[V]{db: db, bucket: []byte(bucket), m: map[string]V{}}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(t.bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var val V
			if err := json.Unmarshal(v, &val); err != nil {
				return fmt.Errorf("%s %q: %w", bucket, k, err)
			}
			t.m[string(k)] = val
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Get returns the value of key.
func (t *Bolt[V]) Get(key string) (V, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	v, ok := t.m[key]
	return v, ok
}

// All returns every entry, ordered by key.
func (t *Bolt[V]) All() []Entry[V] {
	t.mu.RLock()
	out := make([]Entry[V], 0, len(t.m))
	for k, v := range t.m {
		out = append(out, Entry[V]{k, v})
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry[V]) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Put stores v under key, replacing any value.
func (t *Bolt[V]) Put(key string, v V) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.write(key, v, enc)
}

// Update reads, changes and writes one key without another write in
// between. fn runs while the table's writers wait: it may call Get and All
// but not Put, Update or Delete, which would wait for it for ever.
func (t *Bolt[V]) Update(key string, fn func(old V, ok bool) (V, error)) (V, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	old, ok := t.Get(key)
	v, err := fn(old, ok)
	if err != nil {
		var zero V
		return zero, err
	}
	enc, err := json.Marshal(v)
	if err != nil {
		var zero V
		return zero, err
	}
	if err := t.write(key, v, enc); err != nil {
		var zero V
		return zero, err
	}
	return v, nil
}

// write stores enc, then v in the map. The caller holds wmu.
func (t *Bolt[V]) write(key string, v V, enc []byte) error {
	if err := t.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(t.bucket).Put([]byte(key), enc) }); err != nil {
		return err
	}
	t.mu.Lock()
	t.m[key] = v
	t.mu.Unlock()
	return nil
}

// Delete removes key and reports whether it was there.
func (t *Bolt[V]) Delete(key string) (bool, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if _, ok := t.Get(key); !ok {
		return false, nil
	}
	if err := t.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(t.bucket).Delete([]byte(key)) }); err != nil {
		return false, err
	}
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
	return true, nil
}
