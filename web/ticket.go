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
// with the token in the header, then ?ticket=... on the stream URL. A
// ticket works once, for 30 seconds, with the role of the token.
type ticket struct {
	token   auth.Token
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
	ts.m[id] = ticket{token: t, expires: exp}
	return id, exp
}

func (ts *tickets) redeem(id string) (auth.Token, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.m[id]
	delete(ts.m, id)
	if !ok || time.Now().After(t.expires) {
		return auth.Token{}, false
	}
	return t.token, true
}

func (s *Server) newTicket(w http.ResponseWriter, r *http.Request) {
	id, exp := s.tickets.issue(Principal(r.Context()))
	writeJSON(w, http.StatusCreated, map[string]any{"ticket": id, "expires_at": exp.UTC()})
}
