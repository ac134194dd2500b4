package devices

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/internal/kv"
)

// Errors of the integration store callers decide on.
var (
	ErrIntegrationNotFound = errors.New("integration not found")
	ErrIntegrationExists   = errors.New("integration already exists")
)

// maxFilters bounds the topic filters of one integration.
const maxFilters = 64

// Integration is an MQTT client that is not a device: Home Assistant,
// Node-RED, a historian. It connects with username = ID and password = its
// secret, and may publish and subscribe only where its filters allow.
type Integration struct {
	// ID is the integration's name and MQTT username.
	ID string `json:"id"`
	// Publish lists the topic filters the integration may publish to.
	Publish []string `json:"publish"`
	// Subscribe lists the topic filters the integration may subscribe to;
	// a subscription is granted when one of them covers it.
	Subscribe []string  `json:"subscribe"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Validate checks the ID and the filters.
func (in Integration) Validate() error {
	if !idPattern.MatchString(in.ID) {
		return &ValidationError{fmt.Sprintf("id %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", in.ID)}
	}
	if len(in.Publish)+len(in.Subscribe) == 0 {
		return &ValidationError{"publish, subscribe: give at least one topic filter"}
	}
	for _, l := range []struct {
		name    string
		filters []string
	}{{"publish", in.Publish}, {"subscribe", in.Subscribe}} {
		if len(l.filters) > maxFilters {
			return &ValidationError{fmt.Sprintf("%s: at most %d filters", l.name, maxFilters)}
		}
		for _, f := range l.filters {
			if err := validFilter(f); err != nil {
				return &ValidationError{fmt.Sprintf("%s filter %q: %v", l.name, f, err)}
			}
		}
	}
	return nil
}

// validFilter checks an MQTT topic filter as an ACL entry: well formed, and
// not a shared subscription (shares are granted by the filter they share).
func validFilter(f string) error {
	switch {
	case f == "":
		return errors.New("empty")
	case len(f) > 1024:
		return errors.New("longer than 1024 bytes")
	case !utf8.ValidString(f) || strings.ContainsRune(f, 0):
		return errors.New("not valid UTF-8 text")
	case strings.HasPrefix(strings.ToLower(f), "$share/"):
		return errors.New("give the filter itself; a shared subscription is granted by the filter it shares")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) > 1 {
			return errors.New("a wildcard must fill a whole level")
		}
		if l == "#" && i != len(levels)-1 {
			return errors.New("'#' must be the last level")
		}
	}
	return nil
}

type storedIntegration struct {
	Integration
	SecretHash []byte `json:"secret_hash"`
}

var integrationBucket = []byte("integrations")

// Integrations keeps the integration clients' credentials and ACLs in their
// bucket of the state database, cached in memory so that
// authentication and ACL checks never touch the disk. Safe for concurrent
// use.
type Integrations struct {
	m kv.Table[storedIntegration]

	mu       sync.RWMutex // guards onDelete
	onDelete []func(id string)
}

// NewIntegrations loads the integrations from their bucket in db.
func NewIntegrations(db *bolt.DB) (*Integrations, error) {
	m, err := kv.OpenBolt[storedIntegration](db, string(integrationBucket))
	if err != nil {
		return nil, fmt.Errorf("load integrations: %w", err)
	}
	return &Integrations{m: m}, nil
}

// OnDelete registers fn to be called with the ID of every deleted
// integration, after the deletion; fn must not block. Register at start-up.
func (s *Integrations) OnDelete(fn func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onDelete = append(s.onDelete, fn)
}

// Create registers an integration and returns it with its secret, which is
// stored only as a hash and cannot be shown again.
func (s *Integrations) Create(in Integration, by string) (Integration, string, error) {
	if in.Publish == nil {
		in.Publish = []string{}
	}
	if in.Subscribe == nil {
		in.Subscribe = []string{}
	}
	if err := in.Validate(); err != nil {
		return Integration{}, "", err
	}
	in.Publish, in.Subscribe = slices.Clone(in.Publish), slices.Clone(in.Subscribe)
	in.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	in.CreatedBy = by
	secret := NewToken()
	_, err := s.m.Update(in.ID, func(_ storedIntegration, ok bool) (storedIntegration, error) {
		if ok {
			return storedIntegration{}, ErrIntegrationExists
		}
		return storedIntegration{Integration: in, SecretHash: HashToken(secret)}, nil
	})
	if errors.Is(err, ErrIntegrationExists) {
		return Integration{}, "", err
	}
	if err != nil {
		return Integration{}, "", fmt.Errorf("store integration: %w", err)
	}
	return in, secret, nil
}

// Get returns an integration. Its filter slices are shared and must not be
// modified.
func (s *Integrations) Get(id string) (Integration, bool) {
	st, ok := s.m.Get(id)
	return st.Integration, ok
}

// List returns every integration ordered by ID.
func (s *Integrations) List() []Integration {
	all := s.m.All()
	out := make([]Integration, len(all))
	for i, e := range all {
		out[i] = e.Value.Integration
	}
	return out
}

// Delete removes an integration; its secret stops working at once and the
// OnDelete listeners are told.
func (s *Integrations) Delete(id string) error {
	ok, err := s.m.Delete(id)
	if err != nil {
		return fmt.Errorf("delete integration: %w", err)
	}
	if !ok {
		return ErrIntegrationNotFound
	}
	s.mu.RLock()
	ls := s.onDelete
	s.mu.RUnlock()
	for _, fn := range ls {
		fn(id)
	}
	return nil
}

// Authenticate checks an integration's secret in constant time.
func (s *Integrations) Authenticate(id, secret string) (Integration, bool) {
	h := HashToken(secret)
	st, ok := s.m.Get(id)
	if !ok || subtle.ConstantTimeCompare(h, st.SecretHash) != 1 {
		return Integration{}, false
	}
	return st.Integration, true
}
