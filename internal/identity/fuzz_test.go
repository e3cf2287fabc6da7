package identity_test

import (
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
)

// FuzzSignCSR feeds arbitrary bytes to SignCSR as the CSR. It must never
// panic, must fail only with one of its typed errors, and must never sign a
// leaf for anything but the entitled identity.
func FuzzSignCSR(f *testing.F) {
	ca, _ := testutil.NewCA(f, "example.org")
	valid, _ := testutil.NewCSR(f, webID.String())
	other, _ := testutil.NewCSR(f, "spiffe://example.org/ns/shop/sa/admin")
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ed, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs:     []*url.URL{webID.URL()},
		DNSNames: []string{"web.shop.svc"},
	}, edKey)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{valid, other, ed, valid[:len(valid)-1], ca.Roots()[0].Raw, nil, []byte("garbage")} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, der []byte) {
		leaf, err := ca.SignCSR(der, webID, time.Hour)
		if err != nil {
			if leaf != nil {
				t.Errorf("leaf returned alongside error %v", err)
			}
			if !errors.Is(err, identity.ErrBadCSR) && !errors.Is(err, identity.ErrWrongIdentity) && !errors.Is(err, identity.ErrCAUnavailable) {
				t.Errorf("err = %v, not one of the typed signing errors", err)
			}
			return
		}
		c := leaf.Cert
		if len(c.URIs) != 1 || c.URIs[0].String() != webID.String() || len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 || c.IsCA {
			t.Errorf("signed a leaf with URIs %v DNS %v IP %v email %v IsCA %v; want only %s",
				c.URIs, c.DNSNames, c.IPAddresses, c.EmailAddresses, c.IsCA, webID)
		}
	})
}

// FuzzVerifyToken feeds arbitrary strings to Verify. It must never panic,
// must fail only with one of its typed errors, and may accept only a token
// for a workload in its trust domain.
func FuzzVerifyToken(f *testing.F) {
	key := mustECDSA(f, elliptic.P256())
	a := identity.NewTokenAuthority(key, td, identity.CAOptions{Now: newClock(t0).Now})
	tok, _, err := a.Issue("web", "shop", "web", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": webID.String()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		tok,
		parts[0] + "." + parts[1] + ".",
		parts[0] + "." + parts[1],
		none,
		"",
		"...",
		"a.b.c",
		"eyJhbGciOiJFUzI1NiJ9.bnVsbA.AAAA", // {"alg":"ES256"}.null
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, s string) {
		c, err := a.Verify(s)
		if err != nil {
			if !errors.Is(err, identity.ErrTokenInvalid) && !errors.Is(err, identity.ErrTokenExpired) {
				t.Errorf("err = %v, not one of the typed token errors", err)
			}
			if !c.SPIFFEID.IsZero() {
				t.Errorf("claims %+v returned alongside error %v", c, err)
			}
			return
		}
		if !c.SPIFFEID.MemberOf(td) || c.ID == "" || c.Service == "" {
			t.Errorf("accepted token with claims %+v", c)
		}
	})
}
