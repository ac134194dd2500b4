package broker

import (
	"crypto/tls"
	"net/http"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telehub/telehub/internal/testenv"
)

// tlsFixture is a broker with TLS (optionally requiring client
// certificates), WebSocket and secure WebSocket listeners.
func tlsFixture(t *testing.T, pki *testenv.PKI, mutual bool) *fixture {
	t.Helper()
	cert, key := pki.Server(t, "server")
	return newFixture(t, func(c *Config) {
		c.TLSAddr, c.WSAddr, c.WSSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		c.TLSCert, c.TLSKey = cert, key
		if mutual {
			c.ClientCA = pki.CAFile
		}
	})
}

// dialURL connects a paho client to a broker URL (tls://, ws://, wss://).
func dialURL(t *testing.T, url, clientID, user, pass string, tc *tls.Config) (*client, error) {
	t.Helper()
	c := &client{lost: make(chan struct{})}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4).
		SetTLSConfig(tc).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.add(m) }).
		SetConnectionLostHandler(func(paho.Client, error) { close(c.lost) })
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, os.ErrDeadlineExceeded
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

// TestTransports: a device with its token over TLS, WebSocket and secure
// WebSocket; every transport reaches the same broker and pipeline.
func TestTransports(t *testing.T) {
	pki := testenv.NewPKI(t)
	f := tlsFixture(t, pki, false)
	tok := f.device(t, "tr")
	roots := &tls.Config{RootCAs: pki.Pool}
	for _, tc := range []struct{ name, url string }{
		{"tls", "tls://" + f.b.TLSAddr()},
		{"ws", "ws://" + f.b.WSAddr() + "/mqtt"},
		{"wss", "wss://" + f.b.WSSAddr() + "/mqtt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialURL(t, tc.url, "tr-"+tc.name, "tr", tok, roots)
			require.NoError(t, err)
			require.Equal(t, byte(1), c.subscribe(t, "devices/tr/echo/#", 1))
			c.publish(t, "devices/tr/telemetry", 1, false, `{"via":"`+tc.name+`"}`)
			c.publish(t, "devices/tr/echo/ping", 1, false, "ping")
			testenv.Eventually(t, 5*time.Second, "round trip", func() bool { return c.received("devices/tr/echo/ping") })
			_, err = dialURL(t, tc.url, "tr-"+tc.name+"-bad", "tr", "wrong", roots)
			require.Error(t, err, "the token is still checked")
		})
	}
	require.Equal(t, []string{`{"via":"tls"}`, `{"via":"ws"}`, `{"via":"wss"}`}, f.ingested.of("tr"))

	_, err := dialURL(t, "tls://"+f.b.TLSAddr(), "untrusted", "tr", tok, &tls.Config{})
	require.Error(t, err, "a client that does not trust the certificate")
	resp, err := http.Get("http://" + f.b.WSAddr() + "/mqtt")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUpgradeRequired, resp.StatusCode, "plain HTTP on the WebSocket port")
}

// TestMutualTLS: with mqtt.client_ca, the client certificate's common name
// is the identity; no token is needed, and a certificate is required.
func TestMutualTLS(t *testing.T) {
	pki := testenv.NewPKI(t)
	f := tlsFixture(t, pki, true)
	tok := f.device(t, "cert-dev")
	f.integration(t, "cert-int", []string{"site/#"}, []string{"devices/+/telemetry"})
	url := "tls://" + f.b.TLSAddr()
	withCert := func(cn string) *tls.Config {
		return &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.ClientCert(t, cn)}}
	}

	dev, err := dialURL(t, url, "mtls-dev", "", "", withCert("cert-dev"))
	require.NoError(t, err, "the certificate alone identifies the device")
	in, err := dialURL(t, url, "mtls-int", "", "", withCert("cert-int"))
	require.NoError(t, err, "and an integration")
	require.Equal(t, byte(0), in.subscribe(t, "devices/+/telemetry", 0))
	require.Equal(t, byte(0x80), dev.subscribe(t, "devices/+/telemetry", 0), "a certificate device is still a device")
	dev.publish(t, "devices/cert-dev/telemetry", 1, false, `{"t":1}`)
	testenv.Eventually(t, 5*time.Second, "integration sees the telemetry", func() bool { return in.received("devices/cert-dev/telemetry") })
	require.Equal(t, []string{`{"t":1}`}, f.ingested.of("cert-dev"))

	_, err = dialURL(t, url, "mtls-named", "cert-dev", tok, withCert("cert-dev"))
	require.NoError(t, err, "username = common name is fine")

	other := testenv.NewPKI(t)
	for _, tc := range []struct {
		name       string
		user, pass string
		tls        *tls.Config
	}{
		{"no certificate, token only", "cert-dev", tok, &tls.Config{RootCAs: pki.Pool}},
		{"unknown common name", "", "", withCert("ghost")},
		{"username is not the common name", "cert-int", "", withCert("cert-dev")},
		{"certificate of another CA", "", "", &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{other.ClientCert(t, "cert-dev")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialURL(t, url, "mtls-bad", tc.user, tc.pass, tc.tls)
			require.Error(t, err)
		})
	}
	require.Equal(t, 2.0, f.metric(t, "telehub_mqtt_auth_failures_total"), "refused after the handshake")

	// Plain TCP still takes tokens.
	_, err = f.dial(t, "tcp-dev", "cert-dev", tok, nil)
	require.NoError(t, err)
}
