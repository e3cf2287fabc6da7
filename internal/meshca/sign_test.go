package meshca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
)

var signErrs = []error{meshca.ErrBadCSR, meshca.ErrWrongIdentity, meshca.ErrCAUnavailable}

func TestSignCSR(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	roots := readRoots(t, dir)
	clk.Advance(3 * time.Hour) // well past the CA's own NotBefore, so no clamping
	now := clk.Now()
	if identity.MaxBackdate != time.Minute {
		t.Errorf("MaxBackdate = %v, want 1m", identity.MaxBackdate)
	}

	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"one hour", time.Hour},
		{"one day", 24 * time.Hour},
		{"one second", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, key := testutil.NewCSR(t, webID.String())
			leaf, err := ca.SignCSR(csr, webID, tc.ttl)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			c := leaf.Cert
			verifyLeaf(t, c, leaf.Intermediates, roots, now)

			if got, want := c.NotBefore, now.Add(-identity.MaxBackdate); !got.Equal(want) {
				t.Errorf("NotBefore = %v, want now - MaxBackdate = %v", got, want)
			}
			if got, want := c.NotAfter, now.Add(tc.ttl); !got.Equal(want) {
				t.Errorf("NotAfter = %v, want now + ttl = %v", got, want)
			}
			if got := len(c.URIs); got != 1 || c.URIs[0].String() != webID.String() {
				t.Errorf("URIs = %v, want [%s]", c.URIs, webID)
			}
			if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
				t.Errorf("SANs DNS=%v IP=%v email=%v, want only the URI", c.DNSNames, c.IPAddresses, c.EmailAddresses)
			}
			if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(c.ExtKeyUsage, want) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, want)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %b, want DigitalSignature only", c.KeyUsage)
			}
			if c.IsCA {
				t.Errorf("leaf IsCA = true")
			}
			if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				t.Errorf("leaf public key is not the CSR's")
			}
			if got, err := identity.SPIFFEIDFromCert(c); err != nil || got != webID {
				t.Errorf("SPIFFEIDFromCert = %v, %v; want %v", got, err, webID)
			}
			if got := leaf.Intermediates; len(got) != 1 || !got[0].Equal(ca.Intermediates()[0]) {
				t.Errorf("Leaf.Intermediates = %d certs, want the CA intermediate", len(got))
			}
			if got := leaf.Roots; len(got) != 1 || !got[0].Equal(ca.Roots()[0]) {
				t.Errorf("Leaf.Roots = %d certs, want the CA root", len(got))
			}
			// Not usable before its NotBefore or after its NotAfter.
			for _, at := range []time.Time{c.NotBefore.Add(-time.Second), c.NotAfter.Add(time.Second)} {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: certPool(leaf.Intermediates...), CurrentTime: at}); err == nil {
					t.Errorf("leaf verifies at %v, outside [%v, %v]", at, c.NotBefore, c.NotAfter)
				}
			}
		})
	}
}

func TestSignCSRIgnoresRequestedAttributes(t *testing.T) {
	ca, _ := testutil.NewCA(t, "example.org")
	key := mustECDSA(t, elliptic.P256())
	// A CSR that asks, through its subject and extensions, to become a CA.
	bc, err := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{IsCA: true, MaxPathLen: 5})
	if err != nil {
		t.Fatal(err)
	}
	csr := csrDER(t, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "admin", Organization: []string{"Trellis"}},
		URIs:    []*url.URL{webID.URL()},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
		},
	}, key)
	leaf, err := ca.SignCSR(csr, webID, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	if leaf.Cert.IsCA {
		t.Errorf("leaf IsCA = true, want false: CSR extensions must be ignored")
	}
	if leaf.Cert.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Errorf("leaf KeyUsage has CertSign")
	}
	if got := leaf.Cert.Subject.String(); got != "" {
		t.Errorf("leaf Subject = %q, want empty (the CSR subject is ignored)", got)
	}
}

func TestSignCSRKeyTypes(t *testing.T) {
	ca, dir := testutil.NewCA(t, "example.org")
	roots := readRoots(t, dir)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		key          crypto.Signer
		wantKeyUsage x509.KeyUsage
	}{
		{"ecdsa p256", mustECDSA(t, elliptic.P256()), x509.KeyUsageDigitalSignature},
		{"ecdsa p384", mustECDSA(t, elliptic.P384()), x509.KeyUsageDigitalSignature},
		{"ed25519", edKey, x509.KeyUsageDigitalSignature},
		{"rsa 2048", rsaKey, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{webID.URL()}}, tc.key)
			leaf, err := ca.SignCSR(csr, webID, time.Hour)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			verifyLeaf(t, leaf.Cert, leaf.Intermediates, roots, time.Now())
			type equaler interface{ Equal(crypto.PublicKey) bool }
			if !tc.key.Public().(equaler).Equal(leaf.Cert.PublicKey) {
				t.Errorf("leaf public key is not the CSR's")
			}
			if got := leaf.Cert.KeyUsage; got != tc.wantKeyUsage {
				t.Errorf("KeyUsage = %b, want %b", got, tc.wantKeyUsage)
			}
		})
	}
}

func TestSignCSRValidityBounds(t *testing.T) {
	ca, clk, _ := newClockCA(t)
	inter := ca.Intermediates()[0]

	for _, tc := range []struct {
		name          string
		now           time.Time
		ttl           time.Duration
		wantNotBefore time.Time
		wantNotAfter  time.Time
	}{
		{
			name: "capped at the intermediate's NotAfter",
			now:  inter.NotAfter.Add(-time.Hour), ttl: 24 * time.Hour,
			wantNotBefore: inter.NotAfter.Add(-time.Hour - identity.MaxBackdate),
			wantNotAfter:  inter.NotAfter,
		},
		{
			name: "ending exactly at the intermediate's NotAfter",
			now:  inter.NotAfter.Add(-time.Hour), ttl: time.Hour,
			wantNotBefore: inter.NotAfter.Add(-time.Hour - identity.MaxBackdate),
			wantNotAfter:  inter.NotAfter,
		},
		{
			name: "one second before the intermediate expires",
			now:  inter.NotAfter.Add(-time.Second), ttl: time.Hour,
			wantNotBefore: inter.NotAfter.Add(-time.Second - identity.MaxBackdate),
			wantNotAfter:  inter.NotAfter,
		},
		{
			// The clock stepped back below the CA's creation: a leaf must
			// not claim validity before its issuer's.
			name: "NotBefore clamped to the intermediate's",
			now:  t0.Add(-30 * time.Second), ttl: time.Hour,
			wantNotBefore: inter.NotBefore,
			wantNotAfter:  t0.Add(-30*time.Second + time.Hour),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Set(tc.now)
			csr, _ := testutil.NewCSR(t, webID.String())
			leaf, err := ca.SignCSR(csr, webID, tc.ttl)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			if got := leaf.Cert.NotBefore; !got.Equal(tc.wantNotBefore) {
				t.Errorf("NotBefore = %v, want %v", got, tc.wantNotBefore)
			}
			if got := leaf.Cert.NotAfter; !got.Equal(tc.wantNotAfter) {
				t.Errorf("NotAfter = %v, want %v", got, tc.wantNotAfter)
			}
		})
	}
}

func TestSignCSRSerials(t *testing.T) {
	ca, _ := testutil.NewCA(t, "example.org")
	csr, _ := testutil.NewCSR(t, webID.String())
	seen := map[string]bool{ca.Roots()[0].SerialNumber.String(): true, ca.Intermediates()[0].SerialNumber.String(): true}
	maxBits := 0
	for i := range 32 {
		leaf, err := ca.SignCSR(csr, webID, time.Hour)
		if err != nil {
			t.Fatalf("SignCSR #%d: %v", i, err)
		}
		s := leaf.Cert.SerialNumber
		if s.Sign() <= 0 {
			t.Errorf("serial %v is not positive", s)
		}
		// Random in [1, 2^128]: more than 64 bits except with
		// probability 2^-64.
		if s.BitLen() > 129 || s.BitLen() <= 64 {
			t.Errorf("serial %x has %d bits, want a random 128-bit value", s, s.BitLen())
		}
		maxBits = max(maxBits, s.BitLen())
		if seen[s.String()] {
			t.Errorf("serial %x issued twice", s)
		}
		seen[s.String()] = true
	}
	if maxBits < 120 {
		t.Errorf("largest of 32 serials has %d bits, want about 128", maxBits)
	}
}

// tamperSignature flips the last byte of der's signature, leaving the CSR
// parseable.
func tamperSignature(t *testing.T, der []byte) []byte {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(der, csr.Signature)
	if i < 0 {
		t.Fatal("signature not found in CSR")
	}
	out := slices.Clone(der)
	out[i+len(csr.Signature)-1] ^= 0x01
	if _, err := x509.ParseCertificateRequest(out); err != nil {
		t.Fatalf("tampered CSR no longer parses (%v); the case would not test the signature", err)
	}
	return out
}

func TestSignCSRRejects(t *testing.T) {
	ca, _ := testutil.NewCA(t, "example.org")
	p256 := mustECDSA(t, elliptic.P256())
	valid := csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{webID.URL()}}, p256)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	with := func(tmpl x509.CertificateRequest) []byte {
		return csrDER(t, &tmpl, p256)
	}
	webURL := webID.URL()

	for _, tc := range []struct {
		name     string
		csr      []byte
		zeroWant bool // call SignCSR with the zero ID instead of webID
		err      error
	}{
		{name: "nil", csr: nil, err: meshca.ErrBadCSR},
		{name: "empty", csr: []byte{}, err: meshca.ErrBadCSR},
		{name: "garbage", csr: []byte("this is not a certificate signing request"), err: meshca.ErrBadCSR},
		{name: "truncated DER", csr: valid[:len(valid)/2], err: meshca.ErrBadCSR},
		{name: "trailing data", csr: append(slices.Clone(valid), 0), err: meshca.ErrBadCSR},
		{name: "a certificate, not a CSR", csr: ca.Roots()[0].Raw, err: meshca.ErrBadCSR},
		{name: "signature tampered", csr: tamperSignature(t, valid), err: meshca.ErrBadCSR},
		{name: "rsa 1024 key", csr: csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{webURL}}, rsa1024), err: meshca.ErrBadCSR},
		{name: "ecdsa p224 key", csr: csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{webURL}}, mustECDSA(t, elliptic.P224())), err: meshca.ErrBadCSR},
		{name: "ecdsa p521 key", csr: csrDER(t, &x509.CertificateRequest{URIs: []*url.URL{webURL}}, mustECDSA(t, elliptic.P521())), err: meshca.ErrBadCSR},
		{name: "another service account", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://example.org/ns/shop/sa/admin")}}), err: meshca.ErrWrongIdentity},
		{name: "another trust domain", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://other.example/ns/shop/sa/web")}}), err: meshca.ErrWrongIdentity},
		{name: "the trust domain itself", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://example.org")}}), err: meshca.ErrWrongIdentity},
		{name: "longer path", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://example.org/ns/shop/sa/web/x")}}), err: meshca.ErrWrongIdentity},
		{name: "trailing slash", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://example.org/ns/shop/sa/web/")}}), err: meshca.ErrWrongIdentity},
		{name: "query", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://example.org/ns/shop/sa/web?x=1")}}), err: meshca.ErrWrongIdentity},
		{name: "https scheme", csr: with(x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://example.org/ns/shop/sa/web")}}), err: meshca.ErrWrongIdentity},
		{name: "two URI SANs", csr: with(x509.CertificateRequest{URIs: []*url.URL{webURL, mustURL(t, "spiffe://example.org/ns/shop/sa/admin")}}), err: meshca.ErrWrongIdentity},
		{name: "the entitled URI twice", csr: with(x509.CertificateRequest{URIs: []*url.URL{webURL, webURL}}), err: meshca.ErrWrongIdentity},
		{name: "extra DNS SAN", csr: with(x509.CertificateRequest{URIs: []*url.URL{webURL}, DNSNames: []string{"web.shop.svc"}}), err: meshca.ErrWrongIdentity},
		{name: "extra IP SAN", csr: with(x509.CertificateRequest{URIs: []*url.URL{webURL}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), err: meshca.ErrWrongIdentity},
		{name: "extra email SAN", csr: with(x509.CertificateRequest{URIs: []*url.URL{webURL}, EmailAddresses: []string{"web@example.org"}}), err: meshca.ErrWrongIdentity},
		{name: "DNS SAN only", csr: with(x509.CertificateRequest{DNSNames: []string{"web.shop.svc"}}), err: meshca.ErrWrongIdentity},
		{name: "no SAN", csr: with(x509.CertificateRequest{Subject: pkix.Name{CommonName: webID.String()}}), err: meshca.ErrWrongIdentity},
		{name: "zero entitled identity", csr: valid, zeroWant: true, err: meshca.ErrWrongIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := webID
			if tc.zeroWant {
				want = spiffeid.ID{}
			}
			leaf, err := ca.SignCSR(tc.csr, want, time.Hour)
			if leaf != nil {
				t.Errorf("SignCSR returned a leaf for %v alongside err %v", leaf.Cert.URIs, err)
			}
			checkSentinel(t, err, tc.err, signErrs...)
		})
	}
}

func TestSignCSRIntermediateExpired(t *testing.T) {
	ca, clk, _ := newClockCA(t)
	csr, _ := testutil.NewCSR(t, webID.String())
	for _, at := range []time.Time{
		ca.IntermediateExpiry(),
		ca.IntermediateExpiry().Add(time.Second),
		ca.IntermediateExpiry().Add(365 * 24 * time.Hour),
	} {
		clk.Set(at)
		leaf, err := ca.SignCSR(csr, webID, time.Hour)
		if leaf != nil {
			t.Errorf("at %v: SignCSR returned a leaf", at)
		}
		checkSentinel(t, err, meshca.ErrCAUnavailable, signErrs...)
	}
	// A bad CSR is still reported as such, not masked as a CA problem.
	_, err := ca.SignCSR([]byte("garbage"), webID, time.Hour)
	checkSentinel(t, err, meshca.ErrBadCSR, signErrs...)
}

func TestSignCSRConcurrent(t *testing.T) {
	ca, dir := testutil.NewCA(t, "example.org")
	roots := readRoots(t, dir)
	const n = 16
	leaves := make([]*meshca.Leaf, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		id := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "sa"+string(rune('a'+i)))
		csr, _ := testutil.NewCSR(t, id.String())
		wg.Go(func() { leaves[i], errs[i] = ca.SignCSR(csr, id, time.Hour) })
	}
	wg.Wait()
	serials := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("SignCSR #%d: %v", i, errs[i])
		}
		verifyLeaf(t, leaves[i].Cert, leaves[i].Intermediates, roots, time.Now())
		serials[leaves[i].Cert.SerialNumber.String()] = true
	}
	if len(serials) != n {
		t.Errorf("%d distinct serials among %d leaves", len(serials), n)
	}
}

func TestIssueServing(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	clk.Advance(time.Hour)
	cpID := identity.ControlPlaneID(td)
	dns := []string{"localhost", "control.trellis.internal"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}

	cert, err := ca.IssueServing(cpID, 90*24*time.Hour, dns, ips)
	if err != nil {
		t.Fatalf("IssueServing: %v", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		t.Fatal("tls.Certificate.Leaf is nil")
	}
	if got, err := identity.SPIFFEIDFromCert(leaf); err != nil || got != cpID {
		t.Errorf("SPIFFEIDFromCert = %v, %v; want %v", got, err, cpID)
	}
	if got := leaf.URIs[0].String(); got != "spiffe://example.org/ns/trellis-system/sa/control" {
		t.Errorf("URI SAN = %q, want the control plane ID", got)
	}
	if !slices.Equal(leaf.DNSNames, dns) {
		t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, dns)
	}
	if !slices.EqualFunc(leaf.IPAddresses, ips, net.IP.Equal) {
		t.Errorf("IPAddresses = %v, want %v", leaf.IPAddresses, ips)
	}
	if got, want := leaf.NotAfter, clk.Now().Add(90*24*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if got := len(cert.Certificate); got != 2 {
		t.Fatalf("len(Certificate) = %d, want 2 (leaf, intermediate)", got)
	}
	if !bytes.Equal(cert.Certificate[0], leaf.Raw) {
		t.Errorf("Certificate[0] is not the leaf")
	}
	if !bytes.Equal(cert.Certificate[1], ca.Intermediates()[0].Raw) {
		t.Errorf("Certificate[1] is not the intermediate")
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("PrivateKey = %T, want ECDSA P-256", cert.PrivateKey)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("PrivateKey does not match the leaf")
	}

	roots := readRoots(t, dir)
	for _, name := range []string{"localhost", "control.trellis.internal", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: certPool(ca.Intermediates()...), CurrentTime: clk.Now()}); err != nil {
			t.Errorf("verify for %q: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: roots, Intermediates: certPool(ca.Intermediates()...), CurrentTime: clk.Now()}); err == nil {
		t.Errorf("leaf verifies for a host it does not name")
	}

	// A real handshake: the client sends only the leaf's chain and trusts
	// only ca.crt.
	state, err := handshake(t, cert, &tls.Config{RootCAs: roots, ServerName: "localhost", Time: clk.Now})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := len(state.PeerCertificates); got != 2 {
		t.Errorf("client saw %d peer certificates, want 2 (leaf, intermediate)", got)
	}
	if _, err := handshake(t, cert, &tls.Config{RootCAs: roots, ServerName: "evil.example", Time: clk.Now}); err == nil {
		t.Errorf("handshake for a host the certificate does not name succeeded")
	}
}

func TestIssueServingIntermediateExpired(t *testing.T) {
	ca, clk, _ := newClockCA(t)
	clk.Set(ca.IntermediateExpiry())
	_, err := ca.IssueServing(identity.ControlPlaneID(td), time.Hour, []string{"localhost"}, nil)
	checkSentinel(t, err, meshca.ErrCAUnavailable, signErrs...)
}

// handshake runs a TLS handshake over loopback TCP between a server
// presenting cert and a client with cfg. It returns the client's view and
// error; a server-side failure with a successful client fails t.
func handshake(t *testing.T, cert *tls.Certificate, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		srv := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13})
		err = srv.Handshake()
		if err == nil {
			// Wait for the client to finish reading our flight.
			_, err = srv.Read(make([]byte, 1))
			if err == io.EOF {
				err = nil
			}
		}
		errc <- err
	}()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(deadline)
	cli := tls.Client(conn, cfg)
	cerr := cli.Handshake()
	state := cli.ConnectionState()
	cli.Close()
	if serr := <-errc; serr != nil && cerr == nil {
		t.Errorf("server handshake: %v", serr)
	}
	return state, cerr
}

// verifySPIFFE returns a VerifyPeerCertificate that checks the chain to roots
// and the peer's SPIFFE ID, as mesh peers do (workload leaves carry no DNS
// name).
func verifySPIFFE(roots *x509.CertPool, want spiffeid.ID, now time.Time) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		var certs []*x509.Certificate
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: certPool(certs[1:]...), CurrentTime: now}); err != nil {
			return err
		}
		id, err := identity.SPIFFEIDFromCert(certs[0])
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("peer is %s, want %s", id, want)
		}
		return nil
	}
}

func TestLeafTLSCertificate(t *testing.T) {
	pki := newUserPKI(t, 2)
	certFile, keyFile := writePKI(t, append(slices.Clone(pki.inters), pki.root), pki.key, 0o600)
	now := t0.Add(time.Hour)
	ca, err := meshca.LoadExternal(certFile, keyFile, td, meshca.Options{Now: clock.NewFake(now).Now})
	if err != nil {
		t.Fatal(err)
	}
	csr, key := testutil.NewCSR(t, webID.String())
	leaf, err := ca.SignCSR(csr, webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := leaf.TLSCertificate(key)
	want := [][]byte{leaf.Cert.Raw, pki.inters[0].Raw, pki.inters[1].Raw}
	if !slices.EqualFunc(tc.Certificate, want, bytes.Equal) {
		t.Errorf("Certificate has %d DER blocks, want leaf then both intermediates, issuer first", len(tc.Certificate))
	}
	if tc.Leaf != leaf.Cert || tc.PrivateKey != key {
		t.Errorf("TLSCertificate Leaf/PrivateKey not set from the leaf and key")
	}
	// Workload leaves carry no DNS name, so mesh peers replace the default
	// verification with verifySPIFFE: chain to the roots, then SPIFFE ID.
	other, _ := testutil.NewCA(t, "example.org")
	adminID := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/admin")
	for _, hc := range []struct {
		name    string
		roots   *x509.CertPool
		peer    spiffeid.ID
		wantErr bool
	}{
		{"user root, right peer", certPool(pki.root), webID, false},
		{"unrelated root", certPool(other.Roots()...), webID, true},
		{"user root, other peer expected", certPool(pki.root), adminID, true},
	} {
		state, err := handshake(t, tc, &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: verifySPIFFE(hc.roots, hc.peer, now)})
		if gotErr := err != nil; gotErr != hc.wantErr {
			t.Errorf("%s: handshake err = %v, want error: %v", hc.name, err, hc.wantErr)
		}
		if err == nil && len(state.PeerCertificates) != 3 {
			t.Errorf("%s: client saw %d peer certificates, want 3", hc.name, len(state.PeerCertificates))
		}
	}
}
