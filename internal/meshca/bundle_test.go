package meshca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
)

// A ca.crt holding two roots (as during a root rotation) still loads, and
// both roots are in the trust bundle.
func TestLoadCAWithTwoRootsInBundle(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("trellis.local")
	ca, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "next root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	next, _ := x509.ParseCertificate(der)
	bundle := identity.EncodeCertsPEM(next, ca.Roots()[0])
	if err := os.WriteFile(filepath.Join(dir, identity.RootCertFile), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	again, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{})
	if err != nil || created {
		t.Fatalf("reload with two roots: created %v, err %v", created, err)
	}
	if got := len(again.Roots()); got != 2 {
		t.Errorf("trust bundle has %d roots, want 2", got)
	}
}

func TestSignRefusesNonPositiveTTL(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.local")
	id := "spiffe://trellis.local/ns/shop/sa/web"
	csr, _ := testutil.NewCSR(t, id)
	for _, ttl := range []time.Duration{0, -time.Hour} {
		if _, err := ca.SignCSR(csr, spiffeid.RequireFromString(id), ttl); !errors.Is(err, meshca.ErrCAUnavailable) {
			t.Errorf("SignCSR ttl %s: %v, want ErrCAUnavailable", ttl, err)
		}
		if _, err := ca.IssueServing(spiffeid.RequireFromString(id), ttl, nil, nil); err == nil {
			t.Errorf("IssueServing ttl %s: no error", ttl)
		}
	}
}
