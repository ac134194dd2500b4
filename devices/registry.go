// Package devices keeps the device registry: identities, types, labels and
// credentials, persisted in the embedded store and cached in memory so that
// authentication on connect costs one map lookup and one hash.
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

// Device is a registered device as the API shows it.
type Device struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Labels    map[string]string `json:"labels"`
	CreatedAt time.Time         `json:"created_at"`
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

	mu   sync.RWMutex
	devs map[string]*stored
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
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.devs[id]
	if !ok {
		return Device{}, "", ErrNotFound
	}
	ns := *s
	ns.TokenHash = HashToken(token)
	if err := r.put(&ns); err != nil {
		return Device{}, "", fmt.Errorf("store device: %w", err)
	}
	r.devs[id] = &ns
	return ns.Device, token, nil
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
