package broker

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// The MQTT TLS listener (and HTTPS, which shares ServerTLS) offers TLS 1.2
// with AEAD suites only, and TLS 1.3: a client limited to a CBC suite or to
// TLS 1.1 fails the handshake; one offering an ECDHE GCM suite succeeds.
func TestServerTLSOffersModernSuitesOnly(t *testing.T) {
	pki := testenv.NewPKI(t)
	f := tlsFixture(t, pki, false)
	handshake := func(tc *tls.Config) (tls.ConnectionState, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", f.b.TLSAddr(), tc)
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
