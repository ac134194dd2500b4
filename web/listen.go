package web

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"

	"github.com/telehub/telehub/internal/tlsconf"
)

// readHeaderTimeout bounds reading a request's headers.
const readHeaderTimeout = 10 * time.Second

// Listen opens the listener of cfg: at most MaxConnections connections at
// once (counted before TLS, so handshakes count too), and TLS with HTTP/2
// offered by ALPN when a certificate is configured. https tells which.
func Listen(cfg Config) (ln net.Listener, https bool, err error) {
	if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, false, fmt.Errorf("http listen on %s: %w", cfg.Addr, err)
	}
	if cfg.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, cfg.MaxConnections)
	}
	if cfg.TLSCert == "" {
		return ln, false, nil
	}
	tc, err := tlsconf.Server(cfg.TLSCert, cfg.TLSKey, "")
	if err != nil {
		ln.Close()
		return nil, false, fmt.Errorf("https: %w", err)
	}
	// A tls.Config of our own turns off net/http's HTTP/2 unless it is
	// offered here; the WebSocket upgrade still goes over HTTP/1.1 (Go's
	// HTTP/2 server does not take WebSockets, so browsers open those on a
	// connection of their own).
	tc.NextProtos = []string{"h2", "http/1.1"}
	return tls.NewListener(ln, tc), true, nil
}

// HTTPServer returns the http.Server for h with cfg's timeouts: headers
// within 10 seconds, the whole request within ReadTimeout (the stream
// routes lift it once their request is read), keep-alive connections
// closed after IdleTimeout. There is no write timeout: streams and long
// polls set a deadline on each write instead. base is the context of every
// request; errorLog takes net/http's own complaints (TLS handshakes).
func HTTPServer(cfg Config, h http.Handler, base context.Context, errorLog *log.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: min(readHeaderTimeout, cfg.ReadTimeout), ReadTimeout: cfg.ReadTimeout,
		IdleTimeout: cfg.IdleTimeout, BaseContext: func(net.Listener) context.Context { return base }, ErrorLog: errorLog}
}
