package broker

import (
	"crypto/tls"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/topics"
)

// Kind is what a connected MQTT client is.
type Kind uint8

// The kinds of client, decided once when a client connects.
const (
	// KindDevice authenticated with its device ID and token, or with a
	// client certificate naming the device; it may use devices/{id}/ only.
	KindDevice Kind = iota + 1
	// KindIntegration authenticated with an integration's name and secret
	// (or certificate); it may use the topic filters of its ACL.
	KindIntegration
	// KindAnonymous sent no credentials (only when allowed); it may use
	// topics outside devices/, $SYS and $share, within the site ACL.
	KindAnonymous
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindDevice:
		return "device"
	case KindIntegration:
		return "integration"
	case KindAnonymous:
		return "anonymous"
	}
	return "unknown"
}

// identity is who holds a session.
type identity struct {
	kind Kind
	name string // device or integration ID; empty for anonymous clients
}

// session is what the broker knows of an MQTT session: who holds it and its
// message budget. Sessions are keyed by client ID, as mochi keys them, and
// outlive the connection while the MQTT session persists, because messages
// queued for an offline persistent session still pass the ACL.
type session struct {
	cl         *mqtt.Client
	who        identity
	rate       *rate.Limiter // publishes; nil: not limited
	subscribes *rate.Limiter // SUBSCRIBE packets
}

// sessions maps client IDs to sessions. Safe for concurrent use.
type sessions struct{ m sync.Map }

// get returns the session of a client's ID, or nil. A client being taken
// over shares its ID, and so its identity, with the one taking over.
func (s *sessions) get(cl *mqtt.Client) *session {
	if v, ok := s.m.Load(cl.ID); ok {
		return v.(*session)
	}
	return nil
}

// device returns the device ID of a client that is a device.
func (s *sessions) device(cl *mqtt.Client) (string, bool) {
	if se := s.get(cl); se != nil && se.who.kind == KindDevice {
		return se.who.name, true
	}
	return "", false
}

func (s *sessions) put(se *session) { s.m.Store(se.cl.ID, se) }

// forget drops the session of cl unless another client has taken it over.
func (s *sessions) forget(cl *mqtt.Client) {
	if v, ok := s.m.Load(cl.ID); ok && v.(*session).cl == cl {
		s.m.CompareAndDelete(cl.ID, v)
	}
}

// Integrations is what the broker needs of the integration store.
type Integrations interface {
	Authenticate(id, secret string) (devices.Integration, bool)
	Get(id string) (devices.Integration, bool)
	OnDelete(fn func(id string))
}

// Option adds an optional part to the broker.
type Option func(*options)

type options struct {
	integrations Integrations
	metrics      prometheus.Registerer
}

// WithIntegrations lets integration clients connect with the credentials
// and ACLs of ints; deleting an integration disconnects it.
func WithIntegrations(ints Integrations) Option { return func(o *options) { o.integrations = ints } }

// WithMetrics registers the broker's metrics in reg.
func WithMetrics(reg prometheus.Registerer) Option { return func(o *options) { o.metrics = reg } }

// accessHook decides who may connect and what each client may touch. On
// CONNECT it applies the connection limit and refuses an address that has
// spent its failed logins (ratelimit.go), then classifies the client: a
// verified client certificate names a device (or integration); else
// username and password are a device's ID and token, or an integration's
// name and secret; else, with no credentials at all, the client is
// anonymous if that is allowed. A failed login spends its address's
// bucket; a successful one its identity's and the global one. It refuses a
// will the client could not publish, and a client ID whose session another
// identity holds; a session left by revoked credentials is dropped, not
// handed on. Every refusal gets its own CONNACK reason code, a metric and a
// log line.
//
// It is added last, so that the hooks before it still see the identity of a
// client that disconnects.
type accessHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	reg       Registry
	ints      Integrations // nil: no integrations
	anonymous bool
	site      siteACL      // what anonymous clients may use (siteacl.go)
	conform   *conformHook // keeps '$' topics from wildcard subscriptions (conform.go)
	limits    Limits
	connects  *connectLimits
	sessions  *sessions
	m         *brokerMetrics
	warn      *warnLog
}

var _ mqtt.Hook = (*accessHook)(nil)

func (h *accessHook) ID() string { return "telehub-access" }

func (h *accessHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished,
		mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnSubscribed:
		return true
	}
	return false
}

// refusal is a CONNACK reason code for MQTT 5 and its MQTT 3.1.1 cousin.
type refusal struct{ v5, v3 packets.Code }

var (
	refuseRate      = refusal{packets.ErrConnectionRateExceeded, packets.Err3ServerUnavailable}
	refuseBusy      = refusal{packets.ErrServerBusy, packets.Err3ServerUnavailable}
	refuseBadLogin  = refusal{packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword}
	refuseNotAuthed = refusal{packets.ErrNotAuthorized, packets.Err3NotAuthorized}
	refuseClientID  = refusal{packets.ErrClientIdentifierNotValid, packets.Err3ClientIdentifierNotValid}
)

// refuse sends the CONNACK of a refused connection; the returned error makes
// mochi close it.
func (h *accessHook) refuse(cl *mqtt.Client, r refusal) error {
	code := r.v5
	if cl.Properties.ProtocolVersion < 5 {
		code = r.v3
	}
	if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
		h.Log.Debug("send refusing connack", "client", cl.ID, "err", err)
	}
	return r.v5
}

// OnConnect admits or refuses a connection; see accessHook.
func (h *accessHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := string(pk.Connect.Username)
	args := []any{"username", clip(user), "client_id", clip(cl.ID), "remote", cl.Net.Remote, "listener", cl.Net.Listener}
	if h.limits.MaxConnections > 0 && h.m.openConnections() >= int64(h.limits.MaxConnections) {
		h.m.limitHits[limitMaxConnections].Inc()
		h.warn.Warn("mqtt connect refused: at the connection limit", append(args, "max_connections", h.limits.MaxConnections)...)
		return h.refuse(cl, refuseBusy)
	}
	now := time.Now()
	addr := sourceAddr(cl)
	if h.connects.failures.exhausted(addr, now) {
		h.m.limitHits[limitAuthFailureRate].Inc()
		h.warn.Warn("mqtt connect refused: too many failed logins from this address", args...)
		return h.refuse(cl, refuseRate)
	}
	who, reason := h.identify(cl, pk)
	if reason != "" {
		h.connects.failures.allow(addr, now)
		h.m.authFailures.Inc()
		h.warn.Warn("mqtt connect refused: "+reason, args...)
		if who.kind == KindAnonymous {
			return h.refuse(cl, refuseNotAuthed)
		}
		return h.refuse(cl, refuseBadLogin)
	}
	if lim := h.connects.admit(who, cl.ID, now); lim != "" {
		h.m.limitHits[lim].Inc()
		h.warn.Warn("mqtt connect refused: over the "+lim, who.attrs(cl)...)
		return h.refuse(cl, refuseRate)
	}
	if pk.Connect.WillFlag && !h.allowed(who, pk.Connect.WillTopic, true) {
		h.m.aclDenied["will"].Inc()
		h.warn.Warn("mqtt connect refused: the will topic is not the client's to publish", who.attrs(cl, "will_topic", clip(pk.Connect.WillTopic))...)
		return h.refuse(cl, refuseNotAuthed)
	}
	if prev := h.sessions.get(cl); prev != nil && prev.who != who {
		if h.holds(prev) {
			h.m.authFailures.Inc()
			h.warn.Warn("mqtt connect refused: another identity holds the session of this client ID",
				who.attrs(cl, "held_by", prev.who.kind.String()+" "+prev.who.name)...)
			return h.refuse(cl, refuseClientID)
		}
		h.dropSession(prev.cl) // a session left by revoked credentials is not inherited
	}
	se := &session{cl: cl, who: who, subscribes: newLimiter(h.limits.SubscribeRate, h.limits.SubscribeBurst)}
	if who.kind != KindIntegration {
		se.rate = newLimiter(h.limits.MessageRate, h.limits.MessageBurst)
	}
	if who.kind == KindDevice {
		// A certificate may name the device without a username; the other
		// hooks know a device by its username.
		cl.Properties.Username = []byte(who.name)
	}
	h.sessions.put(se)
	return nil
}

// identify classifies a connecting client, or says why it may not connect.
func (h *accessHook) identify(cl *mqtt.Client, pk packets.Packet) (identity, string) {
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	if cn, ok := peerCommonName(cl); ok {
		if user != "" && user != cn {
			return identity{}, "the username is not the common name of the client certificate"
		}
		if _, ok := h.reg.Get(cn); ok {
			return identity{KindDevice, cn}, ""
		}
		if h.ints != nil {
			if _, ok := h.ints.Get(cn); ok {
				return identity{KindIntegration, cn}, ""
			}
		}
		return identity{}, "the client certificate names no device or integration"
	}
	if user == "" && pass == "" {
		if !h.anonymous {
			return identity{kind: KindAnonymous}, "no credentials, and anonymous clients are not allowed"
		}
		return identity{kind: KindAnonymous}, ""
	}
	if _, ok := h.reg.Authenticate(user, pass); ok {
		return identity{KindDevice, user}, ""
	}
	if h.ints != nil {
		if _, ok := h.ints.Authenticate(user, pass); ok {
			return identity{KindIntegration, user}, ""
		}
	}
	return identity{}, "bad credentials"
}

// peerCommonName returns the common name of a verified client certificate.
func peerCommonName(cl *mqtt.Client) (string, bool) {
	c, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return "", false
	}
	st := c.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName == "" {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}

// holds reports whether a session still belongs to an identity that exists.
func (h *accessHook) holds(se *session) bool {
	if cur, ok := h.srv.Clients.Get(se.cl.ID); !ok || cur != se.cl {
		return false
	}
	switch se.who.kind {
	case KindDevice:
		_, ok := h.reg.Get(se.who.name)
		return ok
	case KindIntegration:
		if h.ints == nil {
			return false
		}
		_, ok := h.ints.Get(se.who.name)
		return ok
	}
	return true
}

// OnConnectAuthenticate admits exactly the clients OnConnect admitted.
func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	se := h.sessions.get(cl)
	return se != nil && se.cl == cl
}

// OnACLCheck decides a publish (write), a subscription or a delivery.
func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	se := h.sessions.get(cl)
	if se == nil {
		return false
	}
	ok := h.allowed(se.who, topic, write) && (write || h.conform.deliverable(cl, topic))
	if !ok && write {
		h.m.aclDenied["publish"].Inc()
		h.warn.Warn("mqtt publish refused: topic not allowed", se.who.attrs(cl, "topic", clip(topic))...)
		if !allow(se.rate) && h.limits.OverRate == OverRateDisconnect { // refused publishes cost the message rate too
			h.m.limitHits[limitMessageRate].Inc()
			disconnect(h.srv, cl, packets.ErrMessageRateTooHigh)
		}
	}
	return ok
}

// allowed is the ACL. An empty topic name on a publish is a topic alias
// (MQTT 5): mochi checks the ACL before it resolves the alias, and an alias
// can only have been set by a publish whose topic passed this check.
func (h *accessHook) allowed(who identity, topic string, write bool) bool {
	if write && topic == "" {
		return true
	}
	switch who.kind {
	case KindDevice:
		return topics.Owns(who.name, topic)
	case KindIntegration:
		if h.ints == nil {
			return false
		}
		in, ok := h.ints.Get(who.name)
		if !ok {
			return false
		}
		if write {
			return anyCovers(in.Publish, topic)
		}
		f, _ := unshare(topic)
		return anyCovers(in.Subscribe, f)
	case KindAnonymous:
		return h.site.allows(topic, write)
	}
	return false
}

// OnSubscribed counts and logs the filters the ACL refused.
func (h *accessHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	se := h.sessions.get(cl)
	if se == nil {
		return
	}
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code && sub.Filter != "" && !h.allowed(se.who, sub.Filter, false) {
			h.m.aclDenied["subscribe"].Inc()
			h.warn.Warn("mqtt subscribe refused: filter not allowed", se.who.attrs(cl, "filter", clip(sub.Filter))...)
		}
	}
}

func (h *accessHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if se := h.sessions.get(cl); se != nil {
		h.m.up(cl, se.who.kind)
	}
}

func (h *accessHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.m.down(cl)
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.m.limitHits[limitPacketSize].Inc()
		h.warn.Warn("mqtt client disconnected: packet over mqtt.max_packet_bytes", h.sessions.get(cl).attrs(cl)...)
	}
	if expire {
		h.sessions.forget(cl)
	}
}

func (h *accessHook) OnClientExpired(cl *mqtt.Client) { h.sessions.forget(cl) }

// disconnect closes a client's connection: MQTT 5 clients get a DISCONNECT
// with the reason; MQTT 3.1.1 has no server DISCONNECT, so the connection
// is just closed.
func disconnect(srv *mqtt.Server, cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		srv.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// attrs are the log attributes naming a client.
func (w identity) attrs(cl *mqtt.Client, kv ...any) []any {
	var a []any
	switch w.kind {
	case KindDevice:
		a = []any{"device_id", w.name}
	case KindIntegration:
		a = []any{"integration", w.name}
	default:
		a = []any{"anonymous", true}
	}
	return append(append(a, "client_id", clip(cl.ID), "remote", cl.Net.Remote), kv...)
}

// attrs names the client of a session, which may be nil.
func (se *session) attrs(cl *mqtt.Client, kv ...any) []any {
	if se == nil {
		return append([]any{"username", clip(string(cl.Properties.Username)), "client_id", clip(cl.ID), "remote", cl.Net.Remote}, kv...)
	}
	return se.who.attrs(cl, kv...)
}
