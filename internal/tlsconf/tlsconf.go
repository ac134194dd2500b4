// Package tlsconf builds the server TLS configuration shared by the MQTT
// TLS listeners (broker) and HTTPS (web): modern protocol versions and
// suites only, an optional client CA, and certificates re-read from disk
// when they are renewed.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// cipherSuites are the TLS 1.2 suites offered: Mozilla's "intermediate"
// list as far as Go implements it (ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305). CBC and RSA key exchange suites are not offered.
// TLS 1.3 suites are not configurable in Go and are all AEAD.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Server returns a TLS configuration that serves the certificate and key
// in certFile and keyFile (PEM), re-reading them when either file changes,
// so that a renewed certificate is served without a restart. It offers TLS
// 1.2 and 1.3 only, with the cipherSuites above for 1.2. With clientCA
// (a PEM bundle) set, clients must present a certificate signed by one of
// its CAs. The files are read once here, so a bad path or a key that does
// not match fails at start-up. NextProtos is left empty: the caller sets
// it for its protocol (HTTPS offers h2).
func Server(certFile, keyFile, clientCA string) (*tls.Config, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: cipherSuites, GetCertificate: kp.get}
	if clientCA != "" {
		b, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate found", clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// keyPair is a certificate and key loaded from files, reloaded when the files
// change. Safe for concurrent use.
type keyPair struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	version [2]fileVersion
}

type fileVersion struct {
	mod  time.Time
	size int64
}

func stat(path string) (fileVersion, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileVersion{}, err
	}
	return fileVersion{fi.ModTime(), fi.Size()}, nil
}

func (k *keyPair) load() error {
	cv, err := stat(k.certFile)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	kv, err := stat(k.keyFile)
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	k.mu.Lock()
	k.cert, k.version = &cert, [2]fileVersion{cv, kv}
	k.mu.Unlock()
	return nil
}

// get serves the current certificate, reloading it first when a file has
// changed. A reload that fails (a renewal caught half-written) keeps the
// certificate that worked.
func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cv, cerr := stat(k.certFile)
	kv, kerr := stat(k.keyFile)
	k.mu.Lock()
	changed := cerr == nil && kerr == nil && [2]fileVersion{cv, kv} != k.version
	cert := k.cert
	k.mu.Unlock()
	if !changed {
		return cert, nil
	}
	if err := k.load(); err != nil {
		// Try again when the files change again, not on every handshake.
		k.mu.Lock()
		k.version = [2]fileVersion{cv, kv}
		k.mu.Unlock()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cert, nil
}
