package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
)

// testPKI is a root and an intermediate that sign leaves shaped by each
// test, including ones the mesh CA would never issue.
type testPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	pool              *x509.CertPool
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{rootKey: mustECDSA(t, elliptic.P256()), interKey: mustECDSA(t, elliptic.P256())}
	now := time.Now()
	p.root = mustCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &p.rootKey.PublicKey, p.rootKey)
	p.inter = mustCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLenZero: true,
	}, p.root, &p.interKey.PublicKey, p.rootKey)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.root)
	return p
}

// leaf returns a chain (leaf, intermediate) for a workload leaf as the mesh
// CA signs it, after edit changes its template.
func (p *testPKI) leaf(t testing.TB, edit func(*x509.Certificate)) []*x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{mustURL(t, "spiffe://example.org/ns/shop/sa/web")},
	}
	if edit != nil {
		edit(tmpl)
	}
	key := mustECDSA(t, elliptic.P256())
	return []*x509.Certificate{mustCert(t, tmpl, p.inter, &key.PublicKey, p.interKey), p.inter}
}

// mustCert signs tmpl (self-signed when parent is nil) with a fresh serial.
func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifySVID(t *testing.T) {
	p, other := newTestPKI(t), newTestPKI(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	web := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	past := time.Now().Add(-48 * time.Hour)
	for _, tt := range []struct {
		name          string
		certs         []*x509.Certificate
		usage         x509.ExtKeyUsage // 0 means client auth
		noRoots, noTD bool
		want          error  // a sentinel
		chain         bool   // with msg: an *SVIDError from the chain verification
		msg           string // want an error containing it; "" and want nil: accepted
	}{
		{name: "client", certs: p.leaf(t, nil), usage: x509.ExtKeyUsageClientAuth},
		{name: "server", certs: p.leaf(t, nil), usage: x509.ExtKeyUsageServerAuth},
		{name: "no certificate", want: identity.ErrNoPeerCertificate},
		{name: "no bundle", certs: p.leaf(t, nil), noRoots: true, want: identity.ErrNoTrustBundle},
		{name: "no trust domain to check", certs: p.leaf(t, nil), noTD: true, msg: "no trust domain"},
		{name: "wrong trust domain", certs: p.leaf(t, func(c *x509.Certificate) {
			c.URIs = []*url.URL{mustURL(t, "spiffe://other.example/ns/shop/sa/web")}
		}), msg: "spiffe://other.example/ns/shop/sa/web is not in trust domain example.org"},
		{name: "IsCA leaf", certs: p.leaf(t, func(c *x509.Certificate) { c.IsCA = true }), msg: "leaf is a CA certificate"},
		{name: "no URI SAN", certs: p.leaf(t, func(c *x509.Certificate) { c.URIs = nil }), msg: "0 URI SANs"},
		{name: "two URI SANs", certs: p.leaf(t, func(c *x509.Certificate) {
			c.URIs = append(c.URIs, mustURL(t, "spiffe://example.org/ns/shop/sa/admin"))
		}), msg: "2 URI SANs"},
		{name: "URI SAN not SPIFFE", certs: p.leaf(t, func(c *x509.Certificate) {
			c.URIs = []*url.URL{mustURL(t, "https://example.org/ns/shop/sa/web")}
		}), msg: "scheme"},
		{name: "no digitalSignature", certs: p.leaf(t, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }), msg: "digitalSignature"},
		{name: "certificate signing usage", certs: p.leaf(t, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }), msg: "signing key usage"},
		{name: "server-only leaf as client", certs: p.leaf(t, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), usage: x509.ExtKeyUsageClientAuth, chain: true, msg: "key usage"},
		{name: "client-only leaf as server", certs: p.leaf(t, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}), usage: x509.ExtKeyUsageServerAuth, chain: true, msg: "key usage"},
		{name: "expired", certs: p.leaf(t, func(c *x509.Certificate) { c.NotBefore, c.NotAfter = past, past.Add(time.Hour) }), chain: true, msg: "expired"},
		{name: "not yet valid", certs: p.leaf(t, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(time.Hour) }), chain: true, msg: "not yet valid"},
		{name: "other CA", certs: other.leaf(t, nil), chain: true, msg: "unknown authority"},
		{name: "intermediate not sent", certs: p.leaf(t, nil)[:1], chain: true, msg: "unknown authority"},
		{name: "intermediate as leaf", certs: []*x509.Certificate{p.inter}, msg: "leaf is a CA certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			roots, trust, usage := p.pool, td, tt.usage
			if tt.noRoots {
				roots = nil
			}
			if tt.noTD {
				trust = spiffeid.TrustDomain{}
			}
			if usage == 0 {
				usage = x509.ExtKeyUsageClientAuth
			}
			got, err := identity.VerifySVID(tt.certs, roots, trust, usage)
			if tt.want == nil && tt.msg == "" {
				if err != nil || got != web {
					t.Errorf("got %v, %v; want %v, nil", got, err, web)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %v, nil error; want an error", got)
			}
			if !got.IsZero() {
				t.Errorf("got ID %v alongside error %v", got, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			var se *identity.SVIDError
			if tt.want == nil && !tt.noTD && (!errors.As(err, &se) || se.Chain != tt.chain) {
				t.Errorf("got %#v, want an *SVIDError with Chain %v", err, tt.chain)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

// SystemServerTLS accepts exactly the trellis-system accounts asked for,
// in its trust domain, and says which it wanted.
func TestSystemServerTLS(t *testing.T) {
	p := newTestPKI(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	as := func(id string) []*x509.Certificate {
		return p.leaf(t, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, id)} })
	}
	control, collector := as("spiffe://example.org/ns/trellis-system/sa/control"), as("spiffe://example.org/ns/trellis-system/sa/collector")
	workload, lookalike := as("spiffe://example.org/ns/shop/sa/collector"), as("spiffe://example.org/ns/trellis-system/sa/controller")
	foreign := as("spiffe://other.example/ns/trellis-system/sa/control")
	const (
		saControl   = identity.ControlServiceAccount
		saCollector = identity.CollectorServiceAccount
	)
	for _, tt := range []struct {
		name     string
		accounts []string
		peer     []*x509.Certificate
		roots    *testPKI
		hint     string
		err      string // "" accepts
	}{
		{"control plane as control plane", []string{saControl}, control, p, "", ""},
		{"collector as control plane", []string{saControl}, collector, p, "", "control plane certificate names spiffe://example.org/ns/trellis-system/sa/collector, not a Trellis control plane"},
		{"collector as collector", []string{saCollector}, collector, p, "", ""},
		{"control plane as external collector", []string{saCollector}, control, p, "", "not a Trellis collector (want spiffe://<trust domain>/ns/trellis-system/sa/collector)"},
		{"--collector: control plane", []string{saControl, saCollector}, control, p, "", ""},
		{"--collector: collector", []string{saControl, saCollector}, collector, p, "", ""},
		{"--collector: workload named collector", []string{saControl, saCollector}, workload, p, "", "not a Trellis control plane or collector (want spiffe://<trust domain>/ns/trellis-system/sa/control or .../sa/collector)"},
		{"prefix look-alike", []string{saControl}, lookalike, p, "", "not a Trellis control plane"},
		{"other trust domain", []string{saControl}, foreign, p, "", "control plane certificate: spiffe://other.example/ns/trellis-system/sa/control is not in trust domain example.org"},
		{"no certificate", []string{saCollector}, nil, p, "", "collector presented no certificate"},
		{"other CA", []string{saCollector}, collector, newTestPKI(t), "is --ca-file right?", "collector certificate: x509: certificate signed by unknown authority"},
		{"hint follows a chain error", []string{saCollector}, collector, newTestPKI(t), "is --ca-file right?", ") (is --ca-file right?)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := identity.SystemServerTLS{TrustDomain: td, Accounts: tt.accounts, Roots: func() *x509.CertPool { return tt.roots.pool }, Hint: tt.hint}.Config()
			err := cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: tt.peer})
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("got %v, want accepted", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("got %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestSPIFFEIDFromCert(t *testing.T) {
	for _, tc := range []struct {
		name    string
		uris    []string
		want    string
		wantErr bool
	}{
		{name: "one workload id", uris: []string{"spiffe://example.org/ns/shop/sa/web"}, want: "spiffe://example.org/ns/shop/sa/web"},
		{name: "trust domain id", uris: []string{"spiffe://example.org"}, want: "spiffe://example.org"},
		{name: "no URI", wantErr: true},
		{name: "two URIs", uris: []string{"spiffe://example.org/a", "spiffe://example.org/b"}, wantErr: true},
		{name: "not spiffe", uris: []string{"https://example.org/a"}, wantErr: true},
		{name: "uppercase trust domain", uris: []string{"spiffe://Example.org/a"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &x509.Certificate{}
			for _, u := range tc.uris {
				c.URIs = append(c.URIs, mustURL(t, u))
			}
			got, err := identity.SPIFFEIDFromCert(c)
			if tc.wantErr {
				if err == nil {
					t.Errorf("SPIFFEIDFromCert(%v) = %v, nil error; want error", tc.uris, got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Errorf("SPIFFEIDFromCert(%v) = %v, %v; want %v", tc.uris, got, err, tc.want)
			}
		})
	}
}
