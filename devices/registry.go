// Package devices owns who the devices are: the registry (identities,
// types, labels and credentials, persisted in the hub's state database and
// cached in memory so that authentication on connect costs one map lookup
// and one hash), their presence (connected, last seen), the integrations
// (non-device clients with their own credentials) and the selectors that
// pick devices by label. What the hub asks of a device (commands, desired
// and reported state) is devices/control; the topics a device uses are
// devices/topics.
package devices

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors callers decide on.
var (
	ErrNotFound = errors.New("device not found")
	ErrExists   = errors.New("device already exists")
)

// ValidationError says what is wrong with a device as submitted.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

var (
	idPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	typePattern  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	labelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
)

// ValidType reports whether t is a valid device type (lower case letters,
// digits, '_' and '-', starting with a letter, at most 64 characters).
func ValidType(t string) bool { return typePattern.MatchString(t) }

// Device is a registered device as the API shows it.
type Device struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels"`
	Metadata  map[string]any    `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// stored is the persisted form: the device and the hash of its token.
type stored struct {
	Device
	TokenHash []byte `json:"token_hash"`
}

// Validate checks ID, type and labels; ID becomes part of MQTT topics, so it
// may not contain '/', '+', '#' or spaces.
func (d Device) Validate() error {
	if !idPattern.MatchString(d.ID) {
		return &ValidationError{fmt.Sprintf("id %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", d.ID)}
	}
	if !typePattern.MatchString(d.Type) {
		return &ValidationError{fmt.Sprintf("type %q: use 1-64 lower-case letters, digits, '_' or '-', starting with a letter", d.Type)}
	}
	if len(d.Name) > 256 {
		return &ValidationError{"name: at most 256 bytes"}
	}
	if len(d.Metadata) > 64 {
		return &ValidationError{"metadata: at most 64 keys"}
	}
	if b, err := json.Marshal(d.Metadata); err != nil || len(b) > 16<<10 {
		return &ValidationError{"metadata: at most 16 KiB of JSON"}
	}
	if len(d.Labels) > 64 {
		return &ValidationError{"labels: at most 64"}
	}
	for k, v := range d.Labels {
		if !labelPattern.MatchString(k) {
			return &ValidationError{fmt.Sprintf("label key %q: use 1-63 letters, digits, '.', '_', '/' or '-'", k)}
		}
		if len(v) > 256 {
			return &ValidationError{fmt.Sprintf("label %q: value longer than 256 bytes", k)}
		}
	}
	return nil
}

var bucket = []byte("devices")

// Registry is the device registry. Safe for concurrent use.
type Registry struct {
	db *bolt.DB

	mu        sync.RWMutex
	devs      map[string]*stored
	listeners []func(Change)
}

// Change kinds reported to OnChange listeners.
const (
	Deleted      = "deleted"
	TokenRotated = "token_rotated"
)

// Change is a registry change that other parts must act on: a deleted
// device or a rotated token ends the device's live session.
type Change struct {
	Kind     string
	DeviceID string
}

// OnChange registers fn, called synchronously after each deletion or token
// rotation; fn must not block. Register at start-up.
func (r *Registry) OnChange(fn func(Change)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listeners = append(r.listeners, fn)
}

func (r *Registry) emit(c Change) {
	r.mu.RLock()
	ls := r.listeners
	r.mu.RUnlock()
	for _, fn := range ls {
		fn(c)
	}
}

// New loads the registry from its bucket in db, the hub's state database.
func New(db *bolt.DB) (*Registry, error) {
	r := &Registry{db: db, devs: map[string]*stored{}}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var s stored
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("device %q: %w", k, err)
			}
			r.devs[s.ID] = &s
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	return r, nil
}

// NewToken returns a random token of 192 bits, URL-safe.
func NewToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashToken returns the stored form of a token. Tokens are random and long,
// so one SHA-256 is enough and keeps a reconnect storm cheap.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func (r *Registry) put(s *stored) error {
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return r.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(s.ID), v) })
}

// Create registers a device and returns it with its token, which is not
// stored and cannot be shown again.
func (r *Registry) Create(d Device) (Device, string, error) {
	if err := d.Validate(); err != nil {
		return Device{}, "", err
	}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	d.UpdatedAt = d.CreatedAt
	token := NewToken()
	s := &stored{Device: d, TokenHash: HashToken(token)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.devs[d.ID]; ok {
		return Device{}, "", ErrExists
	}
	if err := r.put(s); err != nil {
		return Device{}, "", fmt.Errorf("store device: %w", err)
	}
	r.devs[d.ID] = s
	return s.Device, token, nil
}

// RotateToken issues a new token for the device; the old one stops working.
func (r *Registry) RotateToken(id string) (Device, string, error) {
	token := NewToken()
	d, err := func() (Device, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		s, ok := r.devs[id]
		if !ok {
			return Device{}, ErrNotFound
		}
		ns := *s
		ns.TokenHash = HashToken(token)
		if err := r.put(&ns); err != nil {
			return Device{}, fmt.Errorf("store device: %w", err)
		}
		r.devs[id] = &ns
		return ns.Device, nil
	}()
	if err != nil {
		return Device{}, "", err
	}
	r.emit(Change{Kind: TokenRotated, DeviceID: id})
	return d, token, nil
}

// Patch changes a device's name, labels and metadata; nil leaves a part as
// it is. The ID and type cannot change.
type Patch struct {
	Name     *string            `json:"name"`
	Labels   *map[string]string `json:"labels"`
	Metadata *map[string]any    `json:"metadata"`
}

// Update applies a patch and returns the device.
func (r *Registry) Update(id string, p Patch) (Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.devs[id]
	if !ok {
		return Device{}, ErrNotFound
	}
	ns := *s
	if p.Name != nil {
		ns.Name = *p.Name
	}
	if p.Labels != nil {
		ns.Labels = *p.Labels
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
	}
	if p.Metadata != nil {
		ns.Metadata = *p.Metadata
	}
	if err := ns.Validate(); err != nil {
		return Device{}, err
	}
	ns.UpdatedAt = time.Now().UTC().Truncate(time.Millisecond)
	if err := r.put(&ns); err != nil {
		return Device{}, fmt.Errorf("store device: %w", err)
	}
	r.devs[id] = &ns
	return ns.Device, nil
}

// Delete removes a device; its token stops working at once.
func (r *Registry) Delete(id string) error {
	r.mu.Lock()
	if _, ok := r.devs[id]; !ok {
		r.mu.Unlock()
		return ErrNotFound
	}
	err := r.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(id)) })
	if err != nil {
		r.mu.Unlock()
		return fmt.Errorf("delete device: %w", err)
	}
	delete(r.devs, id)
	r.mu.Unlock()
	r.emit(Change{Kind: Deleted, DeviceID: id})
	return nil
}

// Get returns a device.
func (r *Registry) Get(id string) (Device, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.devs[id]
	if !ok {
		return Device{}, false
	}
	return s.Device, true
}

// List returns all devices ordered by ID.
func (r *Registry) List() []Device {
	r.mu.RLock()
	out := make([]Device, 0, len(r.devs))
	for _, s := range r.devs {
		out = append(out, s.Device)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Device) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Authenticate checks a device's token in constant time and returns the
// device when it matches.
func (r *Registry) Authenticate(id, token string) (Device, bool) {
	h := HashToken(token)
	r.mu.RLock()
	s, ok := r.devs[id]
	r.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(h, s.TokenHash) != 1 {
		return Device{}, false
	}
	return s.Device, true
}
