package tlsconf

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// The server configuration (the MQTT TLS listener's and HTTPS's) offers TLS 1.2
// with AEAD suites only, and TLS 1.3: a client limited to a CBC suite or to
// TLS 1.1 fails the handshake; one offering an ECDHE GCM suite succeeds.
func TestServerTLSOffersModernSuitesOnly(t *testing.T) {
	pki := testenv.NewPKI(t)
	certFile, keyFile := pki.Server(t, "server")
	server, err := Server(certFile, keyFile, "")
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	handshake := func(tc *tls.Config) (tls.ConnectionState, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), tc)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	for _, tc := range []struct {
		name    string
		cfg     *tls.Config
		ok      bool
		version uint16
	}{
		{"cbc suite over tls 1.2", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}}, false, 0},
		{"tls 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false, 0},
		{"gcm suite over tls 1.2", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true, tls.VersionTLS12},
		{"tls 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true, tls.VersionTLS13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.RootCAs = pki.Pool
			cfg.ServerName = "localhost"
			st, err := handshake(cfg)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.version, st.Version)
		})
	}
}

// TestCertificateReload: a renewed certificate is served without a restart.
func TestCertificateReload(t *testing.T) {
	pki := testenv.NewPKI(t)
	certFile, keyFile := pki.Server(t, "server")
	cfg, err := Server(certFile, keyFile, "")
	require.NoError(t, err)
	serial := func() string {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		require.NoError(t, err)
		return c.Leaf.SerialNumber.String()
	}
	first := serial()
	require.Equal(t, first, serial())

	newCert, newKey := pki.Server(t, "renewed")
	for _, p := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, err := os.ReadFile(p[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p[1], b, 0o600))
	}
	require.NotEqual(t, first, serial(), "the renewed certificate is served")

	require.NoError(t, os.WriteFile(certFile, []byte("half written"), 0o600))
	require.NotEmpty(t, serial(), "a broken file keeps the last good certificate")

	_, err = Server(certFile, keyFile, "")
	require.Error(t, err, "but a broken file fails at start-up")
	_, err = Server(newCert, newKey, certFile)
	require.Error(t, err, "and so does a client CA without certificates")
}
