// Package web serves the HTTP API, the live stream (WebSocket, SSE, long
// poll), /metrics and the health checks (/readyz fails while the durable
// log cannot write), and the dashboard page.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/ingest"
	"github.com/telehub/telehub/internal/auth"
	"github.com/telehub/telehub/internal/live"
)

//go:embed static
var static embed.FS

// Config configures the HTTP server.
type Config struct {
	// Addr is the listen address, e.g. ":8080".
	Addr string `yaml:"addr"`
	// TLSCert and TLSKey are PEM files; when set, the API, the live stream
	// and the dashboard are served over HTTPS only. They are re-read when
	// they change.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxConnections bounds the open HTTP connections, WebSockets
	// included; further clients wait in the listen backlog. 0 is no bound.
	MaxConnections int `yaml:"max_connections"`
	// ReadTimeout bounds reading a request, body included (a client that
	// sends its body a byte a second is cut off). The stream routes lift
	// it once their request is read.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout is how long a keep-alive connection waits for its next
	// request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RateLimit is the sustained rate of API requests (per second) allowed
	// to each token, and to each source address for requests without a
	// valid token; RateBurst is how many may come at once. RateLimit 0
	// turns the limit off.
	RateLimit float64 `yaml:"rate_limit"`
	RateBurst int     `yaml:"rate_burst"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Addr: ":8080", MaxConnections: 1024, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		RateLimit: 50, RateBurst: 200}
}

// Validate checks the values.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("http.addr must not be empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("http.tls_cert and http.tls_key go together")
	}
	if c.MaxConnections < 0 {
		return errors.New("http.max_connections must not be negative (0: no bound)")
	}
	if c.ReadTimeout <= 0 || c.IdleTimeout <= 0 {
		return errors.New("http.read_timeout and http.idle_timeout must be positive")
	}
	if c.RateLimit < 0 {
		return errors.New("http.rate_limit must not be negative (0: no limit)")
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		return errors.New("http.rate_burst must be at least 1")
	}
	return nil
}

// Registry is what the API needs of the device registry.
type Registry interface {
	Create(d devices.Device) (devices.Device, string, error)
	RotateToken(id string) (devices.Device, string, error)
	Update(id string, p devices.Patch) (devices.Device, error)
	Delete(id string) error
	Get(id string) (devices.Device, bool)
	List() []devices.Device
}

// Latest gives the most recent readings of a device.
type Latest interface {
	Get(id string) (time.Time, map[string]any)
}

// Presence tells whether devices are connected.
type Presence interface {
	Get(id string) devices.Status
}

// Stream is the live fan-out the WebSocket reads.
type Stream interface {
	Read(after uint64, buf []live.Message, max int) ([]live.Message, uint64)
	Changed() <-chan struct{}
	Last() uint64
	First() uint64
}

// WALHealth tells whether the durable log can write: Failing returns a
// non-nil error, and since when, while it cannot.
type WALHealth interface {
	Failing() (since time.Time, err error)
}

// Tokens authenticates and manages operator tokens.
type Tokens interface {
	Authenticate(secret string) (auth.Token, bool)
	// Get returns a token as it is now (streams re-check theirs with it);
	// Changed is closed when a token next loses rights.
	Get(id string) (auth.Token, bool)
	Changed() <-chan struct{}
	Create(name string, role auth.Role, by string) (auth.Token, string, error)
	List() []auth.Token
	Delete(id string) error
}

// Deps are the parts of the hub the web server serves.
type Deps struct {
	Registry Registry
	Latest   Latest
	Presence Presence
	Stream   Stream
	History  ingest.History
	Metrics  *prometheus.Registry
	Tokens   Tokens
	Logger   *slog.Logger
	// WAL makes /readyz fail while the durable log cannot write; nil: not
	// checked.
	WAL WALHealth
	// Live sizes the live stream; zero members take defaults.
	Live StreamConfig
	// Integrations manages integration clients of the broker.
	Integrations Integrations
	// Commands, Schemas and States serve device control; nil leaves their
	// endpoints out.
	Commands Commands
	Schemas  Schemas
	States   States
	// Rules, Alerts and Webhooks serve alerting; nil leaves their
	// endpoints out.
	Rules    Rules
	Alerts   Alerts
	Webhooks Webhooks
	// HTTP is the server's configuration; its rate limit applies here.
	HTTP Config
}

// Server is the HTTP side of the hub.
type Server struct {
	deps    Deps
	stream  StreamConfig
	tickets tickets
	limits  *limiters
	// open counts the open streams by transport: websocket, sse, poll.
	open map[string]*atomic.Int64
	// delay observes the stream delay, once per write (see wrote).
	delay prometheus.Observer
	ready atomic.Bool
	mux   *http.ServeMux
	ctx   context.Context // ends when the hub stops: closes WebSockets
}

// New returns the server; ctx ends its long-lived connections.
func New(ctx context.Context, deps Deps) *Server {
	var reg prometheus.Registerer // nil: the metrics are kept but not served
	if deps.Metrics != nil {
		reg = deps.Metrics
	}
	s := &Server{deps: deps, stream: deps.Live, mux: http.NewServeMux(), ctx: ctx, tickets: tickets{m: map[string]ticket{}},
		limits: newLimiters(deps.HTTP.RateLimit, deps.HTTP.RateBurst, reg, deps.Logger)}
	if s.stream.ConflateAbove == 0 {
		s.stream.ConflateAbove = 4096
	}
	if s.stream.PollWait == 0 {
		s.stream.PollWait = 25 * time.Second
	}
	s.open = map[string]*atomic.Int64{}
	for _, tr := range []string{"websocket", "sse", "poll"} {
		n := &atomic.Int64{}
		s.open[tr] = n
		promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{Name: "telehub_live_clients", ConstLabels: prometheus.Labels{"transport": tr},
			Help: "Open live stream clients (WebSockets, SSE streams, waiting long polls)."},
			func() float64 { return float64(n.Load()) })
	}
	s.delay = promauto.With(reg).NewHistogram(prometheus.HistogramOpts{Name: "telehub_live_delay_seconds",
		Help: "Time from a live message's publish to its write to a WebSocket or SSE client, once per write by its oldest message " +
			"(messages published before the client connected, a replay, are not counted).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}) // 0.1 ms to 1.6 s
	s.routes()
	return s
}

// wrote observes the stream delay of what a client was just sent.
func (s *Server) wrote(c *cursor) {
	if c.oldest != 0 {
		s.delay.Observe(time.Duration(time.Now().UnixNano() - c.oldest).Seconds())
	}
}

// SetReady marks the hub ready (or not) for /readyz.
func (s *Server) SetReady(ok bool) { s.ready.Store(ok) }

// contentSecurityPolicy suits the dashboard: ES modules, a stylesheet and
// the chart library, all from the hub itself; no inline script or style
// (the page sets styles through the CSSOM only), images from the hub or
// data: URLs (the icon), fetches and sockets to the hub only, and no
// framing (clickjacking).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// ServeHTTP implements http.Handler. Every answer, API and page, carries
// the security headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	page, _ := fs.Sub(static, "static")
	files := http.FileServerFS(page)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/"):
			problem(w, http.StatusNotFound, "no such endpoint", r.Method+" "+r.URL.Path+" is not part of the API")
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			problem(w, http.StatusMethodNotAllowed, "method not allowed", r.Method+" is not allowed on "+r.URL.Path)
		case r.URL.Path != "/" && strings.HasSuffix(r.URL.Path, "/"):
			// No directory listings: the page names the files it loads.
			problem(w, http.StatusNotFound, "not found", r.URL.Path+" is not a file")
		default:
			files.ServeHTTP(w, r)
		}
	})
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", s.metricsHandler())
	s.mux.Handle("GET /api/v1/devices", s.auth(auth.Viewer, s.listDevices))
	s.mux.Handle("POST /api/v1/devices", s.auth(auth.Admin, s.createDevice))
	s.mux.Handle("POST /api/v1/devices/bulk", s.auth(auth.Admin, s.createDevices))
	s.mux.Handle("GET /api/v1/devices/{id}", s.auth(auth.Viewer, s.getDevice))
	s.mux.Handle("PATCH /api/v1/devices/{id}", s.auth(auth.Admin, s.updateDevice))
	s.mux.Handle("DELETE /api/v1/devices/{id}", s.auth(auth.Admin, s.deleteDevice))
	s.mux.Handle("POST /api/v1/devices/{id}/token", s.auth(auth.Admin, s.rotateToken))
	s.mux.Handle("GET /api/v1/devices/{id}/telemetry", s.auth(auth.Viewer, s.history))
	s.mux.Handle("GET /api/v1/live", s.streamAuth(auth.Viewer, s.live))
	s.mux.Handle("GET /api/v1/events", s.streamAuth(auth.Viewer, s.events))
	s.mux.Handle("GET /api/v1/events/poll", s.streamAuth(auth.Viewer, s.poll))
	s.mux.Handle("POST /api/v1/live/ticket", s.auth(auth.Viewer, s.newTicket))
	s.mux.Handle("GET /api/v1/integrations", s.auth(auth.Admin, s.listIntegrations))
	s.mux.Handle("POST /api/v1/integrations", s.auth(auth.Admin, s.createIntegration))
	s.mux.Handle("GET /api/v1/integrations/{id}", s.auth(auth.Admin, s.getIntegration))
	s.mux.Handle("DELETE /api/v1/integrations/{id}", s.auth(auth.Admin, s.deleteIntegration))
	s.mux.Handle("GET /api/v1/whoami", s.auth(auth.Viewer, s.whoami))
	s.mux.Handle("GET /api/v1/tokens", s.auth(auth.Admin, s.listTokens))
	s.mux.Handle("POST /api/v1/tokens", s.auth(auth.Admin, s.createToken))
	s.mux.Handle("DELETE /api/v1/tokens/{id}", s.auth(auth.Admin, s.deleteToken))
	s.controlRoutes()
	s.alertingRoutes()
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		problem(w, http.StatusServiceUnavailable, "not ready", "the hub is starting or stopping")
		return
	}
	if s.deps.WAL != nil {
		if since, err := s.deps.WAL.Failing(); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the hub's log, not for an unauthenticated endpoint
			}
			problem(w, http.StatusServiceUnavailable, "durable log failing",
				fmt.Sprintf("the durable log cannot write to disk since %s (%v); telemetry is refused until it can",
					since.UTC().Format(time.RFC3339), err))
			return
		}
	}
	io.WriteString(w, "ready\n")
}

// metricsHandler serves the registry in the Prometheus text format, or in
// OpenMetrics to a scraper that asks for it.
func (s *Server) metricsHandler() http.Handler {
	g := prometheus.Gatherer(prometheus.NewRegistry())
	if s.deps.Metrics != nil {
		g = s.deps.Metrics
	}
	opts := promhttp.HandlerOpts{EnableOpenMetrics: true}
	if s.deps.Logger != nil {
		opts.ErrorLog = slog.NewLogLogger(s.deps.Logger.Handler(), slog.LevelWarn)
	}
	return promhttp.HandlerFor(g, opts)
}

// bearer returns the token of the Authorization header.
func bearer(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

type principalKey struct{}

// Principal returns the token a request was authenticated with.
func Principal(ctx context.Context) auth.Token {
	t, _ := ctx.Value(principalKey{}).(auth.Token)
	return t
}

// Who names the principal for records such as "sent by": the token's name
// and ID.
func Who(ctx context.Context) string {
	t := Principal(ctx)
	return t.Name + " (" + t.ID + ")"
}

// auth admits requests whose token, sent in the Authorization header, has
// at least role: 401 without a valid token, 403 with a weaker role, 429
// over the rate limit.
func (s *Server) auth(role auth.Role, next http.HandlerFunc) http.Handler {
	return s.authWith(role, false, next)
}

// streamAuth is auth for the stream routes (live, events, poll), which
// browsers open without headers: they also take a ticket (?ticket=) or the
// token itself (?token=) in the URL.
func (s *Server) streamAuth(role auth.Role, next http.HandlerFunc) http.Handler {
	return s.authWith(role, true, next)
}

func (s *Server) authWith(role auth.Role, stream bool, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var (
			t      auth.Token
			ok     bool
			refuse string
		)
		switch {
		case stream && q.Get("ticket") != "":
			t, ok = s.redeem(q.Get("ticket"))
			refuse = "the ticket is unknown, used or expired, or its token was revoked"
		case bearer(r) != "":
			t, ok = s.deps.Tokens.Authenticate(bearer(r))
			refuse = "the token is not valid"
		case stream && q.Get("token") != "":
			t, ok = s.deps.Tokens.Authenticate(q.Get("token"))
			refuse = "the token is not valid"
		case q.Get("ticket") != "" || q.Get("token") != "":
			refuse = "tickets and ?token= work only on the stream routes (/api/v1/live, /api/v1/events, /api/v1/events/poll); send Authorization: Bearer <token>"
		default:
			refuse = "send Authorization: Bearer <token>"
		}
		if !ok {
			if s.limits.allow(w, r, limitByAddress, clientAddress(r)) {
				problem(w, http.StatusUnauthorized, "unauthorized", refuse)
			}
			return
		}
		if !s.limits.allow(w, r, limitByToken, t.ID) {
			return
		}
		if t.Role < role {
			problem(w, http.StatusForbidden, "forbidden", "this needs the "+role.String()+" role; the token has "+t.Role.String())
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, t)))
	})
}

// current returns the token t as the store has it now, false once it is
// deleted or its role is below role. Streams call it when the store says
// a token changed, and socket commands each time.
func (s *Server) current(t auth.Token, role auth.Role) (auth.Token, bool) {
	now, ok := s.deps.Tokens.Get(t.ID)
	return now, ok && now.Role >= role
}

// problem writes an RFC 9457 problem document.
func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body strictly: unknown fields and trailing data are
// errors, and the size is bounded.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		problem(w, http.StatusBadRequest, "invalid JSON body", err.Error())
		return false
	}
	if dec.More() {
		problem(w, http.StatusBadRequest, "invalid JSON body", "unexpected data after the JSON object")
		return false
	}
	return true
}
