// Package auth keeps the operator tokens of the HTTP API and their roles:
// viewer (read, live stream), operator (also commands and alert
// acknowledgement), admin (also devices, rules, webhooks and tokens).
// Tokens are random, shown once, stored as SHA-256 hashes and cached in
// memory, so checking one costs a hash and two map lookups.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/telehub/telehub/internal/kv"
)

// Role is what a token may do. Higher roles include the lower ones.
type Role int

// Roles, in increasing power.
const (
	Viewer Role = iota + 1
	Operator
	Admin
)

var roleNames = map[Role]string{Viewer: "viewer", Operator: "operator", Admin: "admin"}

// String returns the role's name.
func (r Role) String() string { return roleNames[r] }

// ParseRole reads viewer, operator or admin.
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q: use viewer, operator or admin", s)
}

// MarshalText implements encoding.TextMarshaler.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	*r = v
	return err
}

// ErrNotFound is returned for an unknown token ID.
var ErrNotFound = errors.New("token not found")

// Token describes an operator token; the secret itself is never stored.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Hash      string    `json:"-"`
}

type stored struct {
	Token
	Hash string `json:"hash"`
}

var bucket = []byte("tokens")

// Store holds the tokens. Safe for concurrent use.
type Store struct {
	tokens kv.Table[stored]

	mu     sync.RWMutex
	byHash map[string]string // a token's hash -> its ID, the index Authenticate looks up
	// changed is closed, and replaced, when a token loses rights (today:
	// when it is deleted), so that open streams re-check theirs at once.
	changed chan struct{}
}

// New loads the tokens from their bucket in db.
func New(db *bolt.DB) (*Store, error) {
	tokens, err := kv.OpenBolt[stored](db, string(bucket))
	if err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	s := &Store{tokens: tokens, byHash: map[string]string{}, changed: make(chan struct{})}
	for _, e := range tokens.All() {
		s.byHash[e.Value.Hash] = e.Key
	}
	return s, nil
}

// token is the Token of st with its hash.
func (st stored) token() Token {
	t := st.Token
	t.Hash = st.Hash
	return t
}

// NewSecret returns a random token secret of 192 bits.
func NewSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "thk_" + hex.EncodeToString(b)
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Create issues a token and returns it with its secret, which cannot be
// shown again.
func (s *Store) Create(name string, role Role, by string) (Token, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 128 {
		return Token{}, "", errors.New("name: 1 to 128 characters")
	}
	if _, ok := roleNames[role]; !ok {
		return Token{}, "", errors.New("role: use viewer, operator or admin")
	}
	secret := NewSecret()
	return s.add(name, role, by, secret)
}

func (s *Store) add(name string, role Role, by, secret string) (Token, string, error) {
	id := make([]byte, 6)
	rand.Read(id)
	t := Token{ID: hex.EncodeToString(id), Name: name, Role: role, CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		CreatedBy: by, Hash: hash(secret)}
	if err := s.tokens.Put(t.ID, stored{Token: t, Hash: t.Hash}); err != nil {
		return Token{}, "", fmt.Errorf("store token: %w", err)
	}
	s.mu.Lock()
	s.byHash[t.Hash] = t.ID
	s.mu.Unlock()
	return t, secret, nil
}

// EnsureAdmin registers secret as the bootstrap admin token unless it is
// registered already.
func (s *Store) EnsureAdmin(secret string) error {
	s.mu.RLock()
	_, ok := s.byHash[hash(secret)]
	s.mu.RUnlock()
	if ok {
		return nil
	}
	_, _, err := s.add("admin (bootstrap)", Admin, "", secret)
	return err
}

// HasAdmin reports whether any admin token exists. The hub bootstraps a
// new admin token only when none does, so a revoked bootstrap token is not
// brought back by a restart.
func (s *Store) HasAdmin() bool {
	for _, e := range s.tokens.All() {
		if e.Value.Role == Admin {
			return true
		}
	}
	return false
}

// Get returns the token with this ID as it is now: a caller that
// authenticated a request earlier re-checks with it that the token still
// exists and what its role is.
func (s *Store) Get(id string) (Token, bool) {
	st, ok := s.tokens.Get(id)
	if !ok {
		return Token{}, false
	}
	return st.token(), true
}

// Changed returns a channel that is closed when a token next loses rights
// (it is deleted). Take the channel before checking a token with Get, then
// check again when it closes.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Authenticate returns the token whose secret this is. The lookup is by
// hash, so no secret is ever compared byte by byte.
func (s *Store) Authenticate(secret string) (Token, bool) {
	if secret == "" {
		return Token{}, false
	}
	s.mu.RLock()
	id, ok := s.byHash[hash(secret)]
	s.mu.RUnlock()
	if !ok {
		return Token{}, false
	}
	return s.Get(id)
}

// List returns the tokens ordered by creation.
func (s *Store) List() []Token {
	all := s.tokens.All()
	out := make([]Token, len(all))
	for i, e := range all {
		out[i] = e.Value.token()
	}
	slices.SortStableFunc(out, func(a, b Token) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Delete revokes a token.
func (s *Store) Delete(id string) error {
	st, _ := s.tokens.Get(id)
	ok, err := s.tokens.Delete(id)
	if err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	if !ok {
		return ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byHash, st.Hash)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}
