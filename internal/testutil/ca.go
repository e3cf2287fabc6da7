// Package testutil holds shared test fixtures: a test CA and workload CSRs,
// a t-bound logger, Eventually, log buffers, HTTP clients, echo servers, a
// capture redirector and Prometheus lookups; only tests import it (clock.Fake is
// the test clock).
// Running control planes and proxies is testutil/cptest's and
// testutil/meshtest's: testutil must not import a role (control plane,
// proxy, collector), so that the roles' own tests can use it.
package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/meshca"
)

// NewCA creates a fresh mesh CA for trust domain td in a temporary data dir
// (removed when the test ends) and returns it with that dir; the root is in
// dataDir/ca.crt. It uses the real clock.
func NewCA(t testing.TB, td string) (*meshca.CA, string) {
	t.Helper()
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		t.Fatalf("testutil.NewCA: trust domain %q: %v", td, err)
	}
	dataDir := t.TempDir()
	ca, created, err := meshca.LoadOrCreate(dataDir, trustDomain, meshca.Options{})
	if err != nil {
		t.Fatalf("testutil.NewCA: %v", err)
	}
	if !created {
		t.Fatalf("testutil.NewCA: LoadOrCreate in an empty dir returned created=false")
	}
	return ca, dataDir
}

// NewCSR creates an ECDSA P-256 key and a DER CSR, self-signed by it, whose
// only SAN is the URI id. id need not be a valid SPIFFE ID, so tests can
// build CSRs the CA must refuse.
func NewCSR(t testing.TB, id string) ([]byte, crypto.Signer) {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatalf("testutil.NewCSR: uri %q: %v", id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testutil.NewCSR: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatalf("testutil.NewCSR: %v", err)
	}
	return der, key
}
