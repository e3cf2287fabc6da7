package meshca_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/meshca"
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
			if !errors.Is(err, meshca.ErrBadCSR) && !errors.Is(err, meshca.ErrWrongIdentity) && !errors.Is(err, meshca.ErrCAUnavailable) {
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
