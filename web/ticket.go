package web

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/telehub/telehub/internal/auth"
)

// ticketTTL is how long a ticket may wait to be used.
const ticketTTL = 30 * time.Second

// A ticket lets a browser open the live stream without putting its token in
// a URL (where proxies and logs would keep it): POST /api/v1/live/ticket
// with the token in the Authorization header, then ?ticket=... on a stream
// URL (/api/v1/live, /api/v1/events, /api/v1/events/poll). A ticket works
// once, within 30 seconds, and only there: it opens no other route and
// mints no ticket. It names its token rather than copying it, so that a
// token deleted meanwhile makes its tickets worthless, and the token's role
// at redemption is the one that counts.
type ticket struct {
	tokenID string
	expires time.Time
}

type tickets struct {
	mu sync.Mutex
	m  map[string]ticket
}

func (ts *tickets) issue(t auth.Token) (string, time.Time) {
	b := make([]byte, 16)
	rand.Read(b)
	id := hex.EncodeToString(b)
	exp := time.Now().Add(ticketTTL)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := time.Now()
	for k, v := range ts.m { // bounded: tickets live 30 s
		if now.After(v.expires) {
			delete(ts.m, k)
		}
	}
	ts.m[id] = ticket{tokenID: t.ID, expires: exp}
	return id, exp
}

// take removes the ticket and returns the ID of its token, false if the
// ticket is unknown, used or expired.
func (ts *tickets) take(id string) (string, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.m[id]
	delete(ts.m, id)
	if !ok || time.Now().After(t.expires) {
		return "", false
	}
	return t.tokenID, true
}

// redeem uses up a ticket and returns its token as the store has it now:
// false if the ticket is not good or its token was deleted.
func (s *Server) redeem(id string) (auth.Token, bool) {
	tokenID, ok := s.tickets.take(id)
	if !ok {
		return auth.Token{}, false
	}
	return s.deps.Tokens.Get(tokenID)
}

func (s *Server) newTicket(w http.ResponseWriter, r *http.Request) {
	id, exp := s.tickets.issue(Principal(r.Context()))
	writeJSON(w, http.StatusCreated, map[string]any{"ticket": id, "expires_at": exp.UTC()})
}
