// Package servingcert holds the certificates an ingress gateway presents
// to clients outside the mesh: operator-provided PEM certificate and key
// files, several of them chosen by SNI, reloaded when the files change. A
// pair that fails to load on reload keeps the last good one (and says so
// in the log). Key material is never logged.
//
// It depends on nothing of Trellis.
package servingcert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Pair names one certificate's files: the chain (leaf first) and its key.
type Pair struct {
	CertFile, KeyFile string
}

// Store is the current certificates. Safe for concurrent use.
type Store struct {
	pairs []Pair
	log   *slog.Logger

	mu     sync.Mutex
	sums   [][32]byte // of each pair's files as last loaded
	certs  atomic.Pointer[[]*tls.Certificate]
	reload atomic.Int64 // successful reloads, after the first load
}

// Load reads every pair; any error is the caller's to report (the gateway
// does not start without its certificates).
func Load(pairs []Pair, log *slog.Logger) (*Store, error) {
	if len(pairs) == 0 {
		return nil, errors.New("no certificate: give --tls-cert and --tls-key")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Store{pairs: pairs, log: log, sums: make([][32]byte, len(pairs))}
	certs := make([]*tls.Certificate, len(pairs))
	for i, p := range pairs {
		c, sum, err := loadPair(p)
		if err != nil {
			return nil, err
		}
		certs[i], s.sums[i] = c, sum
	}
	s.certs.Store(&certs)
	return s, nil
}

func loadPair(p Pair) (*tls.Certificate, [32]byte, error) {
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("--tls-cert %s: %w", p.CertFile, err)
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("--tls-key %s: %w", p.KeyFile, err)
	}
	sum := sha256.Sum256(append(append(bytes.Clone(certPEM), 0), keyPEM...))
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, sum, fmt.Errorf("--tls-cert %s with --tls-key %s: %w", p.CertFile, p.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, sum, fmt.Errorf("--tls-cert %s: %w", p.CertFile, err)
		}
	}
	return &c, sum, nil
}

// Reload reads the files again and swaps in the pairs whose content
// changed and loads; it reports whether anything changed. A pair that
// fails keeps its last good certificate.
func (s *Store) Reload() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := *s.certs.Load()
	next := append([]*tls.Certificate(nil), cur...)
	changed := false
	for i, p := range s.pairs {
		c, sum, err := loadPair(p)
		if sum == s.sums[i] {
			continue
		}
		if err != nil {
			// Writers replace the two files one after the other: the
			// next poll sees the pair whole.
			s.log.Warn("serving certificate files changed but do not load; keeping the last good certificate", "cert", p.CertFile, "key", p.KeyFile, "err", err)
			continue
		}
		s.sums[i], next[i], changed = sum, c, true
		s.log.Info("serving certificate reloaded", "cert", p.CertFile, "names", c.Leaf.DNSNames, "not_after", c.Leaf.NotAfter)
	}
	if changed {
		s.certs.Store(&next)
		s.reload.Add(1)
	}
	return changed
}

// Reloads counts the reloads that changed a certificate.
func (s *Store) Reloads() int64 { return s.reload.Load() }

// Watch reloads every interval until ctx ends.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reload()
		}
	}
}

// GetCertificate picks the first certificate valid for the client's SNI
// and signature schemes, else the first certificate (clients without
// SNI, or asking for a name no certificate has, get it and decide).
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	certs := *s.certs.Load()
	for _, c := range certs {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return certs[0], nil
}

// NotAfter is the earliest expiry among the certificates.
func (s *Store) NotAfter() time.Time {
	var earliest time.Time
	for _, c := range *s.certs.Load() {
		if earliest.IsZero() || c.Leaf.NotAfter.Before(earliest) {
			earliest = c.Leaf.NotAfter
		}
	}
	return earliest
}

// TLSConfig is a server configuration with sane defaults for clients on
// the internet: TLS 1.2 and up (1.2 with AEAD ECDHE suites only), the
// store's certificates by SNI, and ALPN h2 and http/1.1.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}
