package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telehub/telehub/internal/tlsconf"
)

// Transport configures the listeners besides plain TCP. Its keys sit
// directly under mqtt: in the configuration file.
type Transport struct {
	// TLSAddr is the MQTT over TLS listener address, e.g. ":8883"; empty:
	// none.
	TLSAddr string `yaml:"tls_addr"`
	// TLSCert and TLSKey are the PEM files of the server certificate and
	// key, for TLSAddr and WSSAddr. They are re-read when they change.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ClientCA is a PEM bundle of CAs. When set, clients of TLSAddr must
	// present a certificate signed by one of them, and the certificate's
	// common name identifies the device (or integration): mutual TLS as an
	// alternative to tokens.
	ClientCA string `yaml:"client_ca"`
	// WSAddr is the MQTT over WebSocket listener address, e.g. ":8083";
	// empty: none. Any path is accepted (MQTT.js uses /mqtt).
	WSAddr string `yaml:"ws_addr"`
	// WSSAddr is the MQTT over secure WebSocket listener, e.g. ":8084",
	// with TLSCert and TLSKey; empty: none.
	WSSAddr string `yaml:"wss_addr"`
}

func (t Transport) validate() error {
	var errs []error
	if (t.TLSCert == "") != (t.TLSKey == "") {
		errs = append(errs, errors.New("mqtt.tls_cert and mqtt.tls_key go together"))
	}
	if (t.TLSAddr != "" || t.WSSAddr != "") && t.TLSCert == "" {
		errs = append(errs, errors.New("mqtt.tls_addr and mqtt.wss_addr need mqtt.tls_cert and mqtt.tls_key"))
	}
	if t.ClientCA != "" && t.TLSAddr == "" {
		errs = append(errs, errors.New("mqtt.client_ca needs mqtt.tls_addr"))
	}
	return errors.Join(errs...)
}

// transports are the broker's listeners; nil members are not configured.
type transports struct {
	tcp, tls *netListener
	ws, wss  *wsListener
}

// disconnectWith makes every listener disconnect its clients on close with
// fn instead of mochi's function.
func (t *transports) disconnectWith(fn func(listener string)) {
	if t.tcp != nil {
		t.tcp.disconnect = fn
	}
	if t.tls != nil {
		t.tls.disconnect = fn
	}
	if t.ws != nil {
		t.ws.disconnect = fn
	}
	if t.wss != nil {
		t.wss.disconnect = fn
	}
}

// observeAcks makes every listener's connections observe their PUBACK
// latency with o. Call it before the listeners serve.
func (t *transports) observeAcks(o prometheus.Observer) {
	if t.tcp != nil {
		t.tcp.conns.acks = o
	}
	if t.tls != nil {
		t.tls.conns.acks = o
	}
	if t.ws != nil {
		t.ws.conns.acks = o
	}
	if t.wss != nil {
		t.wss.conns.acks = o
	}
}

func (t *transports) all() []listeners.Listener {
	var out []listeners.Listener
	if t.tcp != nil {
		out = append(out, t.tcp)
	}
	if t.tls != nil {
		out = append(out, t.tls)
	}
	if t.ws != nil {
		out = append(out, t.ws)
	}
	if t.wss != nil {
		out = append(out, t.wss)
	}
	return out
}

// newTransports prepares the configured listeners; mochi opens them.
func newTransports(cfg Config) (*transports, error) {
	t := &transports{tcp: &netListener{socket: socket{id: "tcp", proto: "tcp", addr: cfg.Addr}, timeout: cfg.ConnectTimeout}}
	if cfg.TLSAddr == "" && cfg.WSAddr == "" && cfg.WSSAddr == "" {
		return t, nil
	}
	var server, mutual *tls.Config
	if cfg.TLSCert != "" {
		var err error
		if server, err = tlsconf.Server(cfg.TLSCert, cfg.TLSKey, ""); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		if mutual, err = tlsconf.Server(cfg.TLSCert, cfg.TLSKey, cfg.ClientCA); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	if cfg.TLSAddr != "" {
		t.tls = &netListener{socket: socket{id: "tls", proto: "tls", addr: cfg.TLSAddr, tls: mutual}, timeout: cfg.ConnectTimeout}
	}
	if cfg.WSAddr != "" {
		t.ws = newWSListener("ws", cfg.WSAddr, nil, cfg.ConnectTimeout)
	}
	if cfg.WSSAddr != "" {
		t.wss = newWSListener("wss", cfg.WSSAddr, server, cfg.ConnectTimeout)
	}
	return t, nil
}

// conns tracks a listener's open connections, so that closing the listener
// closes them too, those still before their CONNECT included (mochi only
// closes the clients it knows), and waits for their goroutines.
type conns struct {
	acks   prometheus.Observer // the PUBACK latency of the connections' ackHolds
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// serve runs establish for c on a goroutine it owns, unless closing.
func (cs *conns) serve(c net.Conn, establish func(net.Conn)) {
	c = newAckHold(c, cs.acks)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		c.Close()
		return
	}
	if cs.open == nil {
		cs.open = map[net.Conn]struct{}{}
	}
	cs.open[c] = struct{}{}
	cs.wg.Go(func() {
		defer func() {
			c.Close()
			cs.mu.Lock()
			delete(cs.open, c)
			cs.mu.Unlock()
		}()
		establish(c)
	})
}

// close closes every connection and waits for their goroutines.
func (cs *conns) close() {
	cs.mu.Lock()
	cs.closed = true
	open := make([]net.Conn, 0, len(cs.open))
	for c := range cs.open {
		open = append(open, c)
	}
	cs.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	cs.wg.Wait()
}

// netListener is a mochi listener for MQTT over TCP or TLS. Unlike mochi's
// own, it gives a new connection connect_timeout for its handshake and
// CONNECT (mochi then sets the keepalive deadline), keeps accepting after a
// transient accept error, and closes connections that never sent CONNECT
// when it closes.
type netListener struct {
	socket
	timeout time.Duration

	conns conns
}

var _ listeners.Listener = (*netListener)(nil)

// socket is what the TCP and WebSocket listeners share: the identity of the
// listener and its (optionally TLS) socket.
type socket struct {
	id, proto, addr string
	tls             *tls.Config
	ln              net.Listener
	log             *slog.Logger
	// disconnect, when set, replaces mochi's function for disconnecting
	// the listener's clients on close (see disconnectClients).
	disconnect func(listener string)
}

// closeClients disconnects the listener's clients, with disconnect when it
// is set, else with mochi's own function.
func (l *socket) closeClients(mochi listeners.CloseFn) {
	if l.disconnect != nil {
		l.disconnect(l.id)
		return
	}
	mochi(l.id)
}

// ID returns the listener's ID.
func (l *socket) ID() string { return l.id }

// Protocol returns tcp, tls, ws or wss.
func (l *socket) Protocol() string { return l.proto }

// Address returns the bound address once listening.
func (l *socket) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// open opens the socket, wrapped in TLS when configured.
func (l *socket) open(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("mqtt %s listener on %s: %w", l.proto, l.addr, err)
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	return nil
}

// Init opens the socket.
func (l *netListener) Init(log *slog.Logger) error { return l.open(log) }

// Serve accepts connections until Close.
func (l *netListener) Serve(establish listeners.EstablishFn) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, then go on.
			l.log.Warn("mqtt accept failed", "listener", l.id, "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		c.SetDeadline(time.Now().Add(l.timeout))
		l.conns.serve(c, func(c net.Conn) {
			if err := establish(l.id, c); err != nil {
				l.log.Debug("mqtt connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "err", err)
			}
		})
	}
}

// Close stops accepting, disconnects the listener's clients and closes every
// connection. Safe to call twice.
func (l *netListener) Close(closeClients listeners.CloseFn) {
	if l.ln != nil {
		l.ln.Close()
	}
	l.closeClients(closeClients)
	l.conns.close()
}

// wsListener is a mochi listener for MQTT over WebSocket (RFC 6455 binary
// frames, subprotocol "mqtt"), plain or over TLS.
type wsListener struct {
	socket
	timeout  time.Duration
	upgrader websocket.Upgrader

	srv       *http.Server
	establish listeners.EstablishFn
	conns     conns
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id, addr string, tlsConfig *tls.Config, timeout time.Duration) *wsListener {
	proto := "ws"
	if tlsConfig != nil {
		proto = "wss"
	}
	return &wsListener{socket: socket{id: id, proto: proto, addr: addr, tls: tlsConfig}, timeout: timeout,
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt", "mqttv3.1"},
			HandshakeTimeout: timeout,
			// MQTT credentials, not cookies, authenticate the client, so
			// any page may connect (as with mosquitto and EMQX).
			CheckOrigin: func(*http.Request) bool { return true },
		}}
}

// Init opens the socket.
func (l *wsListener) Init(log *slog.Logger) error {
	if err := l.open(log); err != nil {
		return err
	}
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: l.timeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return nil
}

// Serve serves WebSocket upgrades until Close.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("mqtt websocket listener failed", "listener", l.id, "err", err)
	}
}

// ServeHTTP upgrades a request to a WebSocket and hands it to the broker.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this is an MQTT over WebSocket endpoint: connect with an MQTT client", http.StatusUpgradeRequired)
		return
	}
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &wsConn{ws: ws}
	c.SetDeadline(time.Now().Add(l.timeout))
	l.conns.serve(c, func(c net.Conn) {
		if err := l.establish(l.id, c); err != nil {
			l.log.Debug("mqtt connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "err", err)
		}
	})
}

// Close stops accepting, disconnects the listener's clients and closes every
// connection. Safe to call twice.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if l.srv != nil {
		l.srv.Close()
	}
	l.closeClients(closeClients)
	l.conns.close()
}

// wsConn presents a WebSocket as the byte stream MQTT expects: reads run on
// across binary messages, each write is one binary message. MQTT packets need
// not align with messages.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read, nil between messages
}

var errTextFrame = errors.New("mqtt over websocket: text message; MQTT needs binary messages")

// Read reads the stream.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message. mochi serialises a client's writes.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame, best effort, and closes the connection.
func (c *wsConn) Close() error {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return c.ws.Close()
}

// LocalAddr returns the local address.
func (c *wsConn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr returns the peer's address.
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// SetDeadline sets the read deadline, which mochi uses for the CONNECT
// timeout and keepalive. gorilla/websocket manages write deadlines per
// message and its SetWriteDeadline may not run beside a write, so writes
// keep none: a client that stops reading is caught by its read deadline.
func (c *wsConn) SetDeadline(t time.Time) error { return c.ws.NetConn().SetReadDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.NetConn().SetReadDeadline(t) }

// SetWriteDeadline does nothing; see SetDeadline.
func (c *wsConn) SetWriteDeadline(time.Time) error { return nil }

// ConnectionState returns the TLS state of a wss connection.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.ws.NetConn().(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// closeListeners closes the listeners opened so far, when New fails.
func (b *Broker) closeListeners() {
	for _, l := range b.lns.all() {
		l.Close(func(string) {})
	}
}

// TLSAddr returns the bound MQTT over TLS address, or "" without one.
func (b *Broker) TLSAddr() string {
	if b.lns.tls == nil {
		return ""
	}
	return b.lns.tls.Address()
}

// WSAddr returns the bound MQTT over WebSocket address, or "" without one.
func (b *Broker) WSAddr() string {
	if b.lns.ws == nil {
		return ""
	}
	return b.lns.ws.Address()
}

// WSSAddr returns the bound MQTT over secure WebSocket address, or "".
func (b *Broker) WSSAddr() string {
	if b.lns.wss == nil {
		return ""
	}
	return b.lns.wss.Address()
}
