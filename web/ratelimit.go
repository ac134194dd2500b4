package web

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// What an API request is rate limited by: its token, or its source address
// when it has no valid token.
const (
	limitByToken   = "token"
	limitByAddress = "address"
)

const (
	// maxAddresses bounds the source addresses tracked at once. Requests
	// without a valid token from further addresses are refused (429)
	// until idle ones are swept: such requests could only ever get a 401,
	// so refusing them costs no honest client anything, while an attacker
	// with many addresses cannot grow the map.
	maxAddresses = 10000
	// sweepEvery is how often idle limiters are dropped in any case.
	sweepEvery = time.Minute
	// logEvery spaces the log lines about limited requests.
	logEvery = 10 * time.Second
)

// limiters holds a token bucket (golang.org/x/time/rate) per token and per
// source address. A limiter left idle long enough to have refilled is no
// different from a new one, so it is dropped; that keeps both maps to the
// clients of the last few seconds. Safe for concurrent use.
type limiters struct {
	rate  rate.Limit
	burst int
	// idle is how long a bucket takes to refill: an entry idle for longer
	// is dropped.
	idle         time.Duration
	maxAddresses int

	mu        sync.Mutex
	byKind    map[string]map[string]*limiterEntry
	lastSweep time.Time

	limited    map[string]prometheus.Counter
	logger     *slog.Logger
	lastLog    atomic.Int64 // unix nanoseconds
	suppressed atomic.Int64
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// newLimiters returns the limiters; perSecond 0 turns limiting off.
func newLimiters(perSecond float64, burst int, reg prometheus.Registerer, logger *slog.Logger) *limiters {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &limiters{rate: rate.Limit(perSecond), burst: burst, maxAddresses: maxAddresses, logger: logger,
		byKind:  map[string]map[string]*limiterEntry{limitByToken: {}, limitByAddress: {}},
		limited: map[string]prometheus.Counter{}, lastSweep: time.Now()}
	if perSecond > 0 {
		l.idle = max(time.Duration(float64(burst)/perSecond*float64(time.Second)), time.Second)
	}
	limited := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "telehub_http_rate_limited_total",
		Help: "API requests refused with 429 for going over the rate limit of their token or, without a valid token, of their source address."}, []string{"by"})
	for _, by := range []string{limitByToken, limitByAddress} {
		l.limited[by] = limited.WithLabelValues(by)
	}
	return l
}

// allow takes one request from the bucket of key and sets the RateLimit-*
// headers. Over the limit it answers 429 with Retry-After and returns
// false.
func (l *limiters) allow(w http.ResponseWriter, r *http.Request, by, key string) bool {
	if l.rate <= 0 {
		return true
	}
	now := time.Now()
	lim, ok := l.get(by, key, now)
	if !ok {
		l.refuse(w, r, by, key, time.Second)
		return false
	}
	res := lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		l.refuse(w, r, by, key, d)
		return false
	}
	l.headers(w, lim.TokensAt(now))
	return true
}

// headers sets the RateLimit-* fields (draft-ietf-httpapi-ratelimit-headers):
// the burst, what is left of it, and the seconds until it is whole again.
func (l *limiters) headers(w http.ResponseWriter, tokens float64) {
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(l.burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(int(tokens), 0)))
	reset := math.Ceil((float64(l.burst) - tokens) / float64(l.rate))
	h.Set("RateLimit-Reset", strconv.Itoa(max(int(reset), 0)))
}

// refuse answers 429: retry after wait (whole seconds, at least one).
func (l *limiters) refuse(w http.ResponseWriter, r *http.Request, by, key string, wait time.Duration) {
	l.limited[by].Inc()
	l.headers(w, 0)
	secs := strconv.Itoa(max(int(math.Ceil(wait.Seconds())), 1))
	w.Header().Set("Retry-After", secs)
	w.Header().Set("RateLimit-Reset", secs)
	problem(w, http.StatusTooManyRequests, "too many requests",
		"over the rate limit of "+strconv.FormatFloat(float64(l.rate), 'g', -1, 64)+" requests/s (burst "+strconv.Itoa(l.burst)+") per "+by+"; retry after "+secs+" s")
	// One line per logEvery at most, with the count of those not logged.
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(logEvery) || !l.lastLog.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	attr := slog.String("token_id", key)
	if by == limitByAddress {
		attr = slog.String("remote_addr", key)
	}
	l.logger.Warn("api request over the rate limit", "by", by, attr, "path", r.URL.Path, "not_logged", l.suppressed.Swap(0))
}

// get returns the limiter of key, creating it; false when the address map
// is full of active addresses.
func (l *limiters) get(by, key string, now time.Time) (*rate.Limiter, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.byKind[by]
	if e, ok := m[key]; ok {
		e.seen = now
		return e.lim, true
	}
	if now.Sub(l.lastSweep) >= sweepEvery || (by == limitByAddress && len(m) >= l.maxAddresses && now.Sub(l.lastSweep) >= l.idle/4) {
		l.sweep(now)
	}
	if by == limitByAddress && len(m) >= l.maxAddresses {
		return nil, false
	}
	e := &limiterEntry{lim: rate.NewLimiter(l.rate, l.burst), seen: now}
	m[key] = e
	return e.lim, true
}

// sweep drops the limiters idle long enough to have refilled. The caller
// holds mu.
func (l *limiters) sweep(now time.Time) {
	l.lastSweep = now
	for _, m := range l.byKind {
		for k, e := range m {
			if now.Sub(e.seen) > l.idle {
				delete(m, k)
			}
		}
	}
}

// size returns how many limiters are held.
func (l *limiters) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byKind[limitByToken]) + len(l.byKind[limitByAddress])
}

// clientAddress is the request's source address without the port: the key
// of requests that have no valid token. Behind a reverse proxy every
// client shares the proxy's address.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
