package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/trellismesh/trellis/internal/identity"
)

// ControlTLS is a client TLS config that verifies a control plane with
// its data dir's ca.crt only (as a proxy given --ca-file does), TLS 1.3,
// presenting cert when given.
func ControlTLS(t testing.TB, dataDir string, cert *tls.Certificate) *tls.Config {
	t.Helper()
	roots, err := identity.ReadCertsFile(filepath.Join(dataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}
