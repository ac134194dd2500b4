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
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/internal/kv"
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

// Registry is the device registry, kept in the "devices" bucket of the
// hub's state database. Safe for concurrent use.
type Registry struct {
	devs kv.Table[stored]

	mu        sync.RWMutex // guards listeners
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
	devs, err := kv.OpenBolt[stored](db, "devices")
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	return &Registry{devs: devs}, nil
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
	s, err := r.devs.Update(d.ID, func(_ stored, ok bool) (stored, error) {
		if ok {
			return stored{}, ErrExists
		}
		return stored{Device: d, TokenHash: HashToken(token)}, nil
	})
	if err != nil {
		return Device{}, "", storeErr(err)
	}
	return s.Device, token, nil
}

// RotateToken issues a new token for the device; the old one stops working.
func (r *Registry) RotateToken(id string) (Device, string, error) {
	token := NewToken()
	s, err := r.devs.Update(id, func(s stored, ok bool) (stored, error) {
		if !ok {
			return s, ErrNotFound
		}
		s.TokenHash = HashToken(token)
		return s, nil
	})
	if err != nil {
		return Device{}, "", storeErr(err)
	}
	r.emit(Change{Kind: TokenRotated, DeviceID: id})
	return s.Device, token, nil
}

// storeErr passes the registry's own errors through and puts the disk's in
// context.
func storeErr(err error) error {
	var ve *ValidationError
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.As(err, &ve) {
		return err
	}
	return fmt.Errorf("store device: %w", err)
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
	s, err := r.devs.Update(id, func(ns stored, ok bool) (stored, error) {
		if !ok {
			return ns, ErrNotFound
		}
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
			return ns, err
		}
		ns.UpdatedAt = time.Now().UTC().Truncate(time.Millisecond)
		return ns, nil
	})
	if err != nil {
		return Device{}, storeErr(err)
	}
	return s.Device, nil
}

// Delete removes a device; its token stops working at once.
func (r *Registry) Delete(id string) error {
	ok, err := r.devs.Delete(id)
	if err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	if !ok {
		return ErrNotFound
	}
	r.emit(Change{Kind: Deleted, DeviceID: id})
	return nil
}

// Get returns a device.
func (r *Registry) Get(id string) (Device, bool) {
	s, ok := r.devs.Get(id)
	return s.Device, ok
}

// List returns all devices ordered by ID.
func (r *Registry) List() []Device {
	all := r.devs.All()
	out := make([]Device, len(all))
	for i, e := range all {
		out[i] = e.Value.Device
	}
	return out
}

// Authenticate checks a device's token in constant time and returns the
// device when it matches.
func (r *Registry) Authenticate(id, token string) (Device, bool) {
	h := HashToken(token)
	s, ok := r.devs.Get(id)
	if !ok || subtle.ConstantTimeCompare(h, s.TokenHash) != 1 {
		return Device{}, false
	}
	return s.Device, true
}
