package meshca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
)

// t0 is a whole second: certificates and JWTs keep second precision, so
// times derived from it round-trip exactly.
var t0 = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD = spiffeid.RequireTrustDomainFromString("other.example")
	webID   = spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
)

// newClockCA creates a CA in a fresh dir with a fake clock starting at t0.
func newClockCA(t *testing.T) (*meshca.CA, *clock.Fake, string) {
	t.Helper()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	ca, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	if !created {
		t.Fatalf("LoadOrCreateCA in empty dir: created = false, want true")
	}
	return ca, clk, dir
}

func mustECDSA(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

// csrDER builds a CSR from tmpl self-signed by key.
func csrDER(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse url %q: %v", s, err)
	}
	return u
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.Mode().Perm()
}

// readRoots reads the mesh root the way proxies do: from dataDir/ca.crt.
func readRoots(t *testing.T, dataDir string) *x509.CertPool {
	t.Helper()
	roots, err := identity.ReadCertsFile(filepath.Join(dataDir, identity.RootCertFile))
	if err != nil {
		t.Fatalf("read %s: %v", identity.RootCertFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return pool
}

func certPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// verifyLeaf verifies leaf for both TLS server and client use at now.
func verifyLeaf(t *testing.T, leaf *x509.Certificate, inters []*x509.Certificate, roots *x509.CertPool, now time.Time) {
	t.Helper()
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: certPool(inters...),
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{eku},
		})
		if err != nil {
			t.Errorf("verify leaf for ext key usage %v: %v", eku, err)
		}
	}
}

// checkSentinel fails unless err matches want and none of the other
// sentinels: the gRPC edge maps each to a different status code.
func checkSentinel(t *testing.T, err, want error, sentinels ...error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("err = %v, want errors.Is(err, %q)", err, want)
		return
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("err = %v also matches %q, want only %q", err, s, want)
		}
	}
}
