package mtls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
)

const trustDomain = "trellis.test"

func workloadID(td, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString(td), "ns", "shop", "sa", sa)
}

var (
	frontendID = workloadID(trustDomain, "frontend")
	catalogID  = workloadID(trustDomain, "catalog")
	otherID    = workloadID(trustDomain, "other")
)

// pki is a test CA (testutil.NewCA) with its roots as a pool.
type pki struct {
	ca      *meshca.CA
	dataDir string
	roots   *x509.CertPool
}

func newPKI(t testing.TB, td string) *pki {
	t.Helper()
	ca, dir := testutil.NewCA(t, td)
	roots := x509.NewCertPool()
	for _, r := range ca.Roots() {
		roots.AddCert(r)
	}
	return &pki{ca: ca, dataDir: dir, roots: roots}
}

func (p *pki) cert(t testing.TB, id spiffeid.ID) *tls.Certificate {
	t.Helper()
	c, err := p.ca.IssueServing(id, time.Hour, nil, nil)
	if err != nil {
		t.Fatalf("issue %s: %v", id, err)
	}
	return c
}

func (p *pki) identity(t testing.TB, id spiffeid.ID) *mtls.StaticIdentity {
	return &mtls.StaticIdentity{SPIFFEID: id, Cert: p.cert(t, id), Roots: p.roots}
}

// signed is a certificate the CA's intermediate (key from its data dir)
// signs from tmpl: the odd certificates the CA itself never issues.
func (p *pki) signed(t testing.TB, tmpl *x509.Certificate) *tls.Certificate {
	t.Helper()
	interKey, err := identity.ReadKeyFile(filepath.Join(p.dataDir, "ca/intermediate.key"))
	if err != nil {
		t.Fatal(err)
	}
	inter := p.ca.Intermediates()[0]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, key.Public(), interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, i := range p.ca.Intermediates() {
		c.Certificate = append(c.Certificate, i.Raw)
	}
	return c
}

func set(ids ...spiffeid.ID) map[spiffeid.ID]bool {
	m := map[spiffeid.ID]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// outcome is what each side of one handshake saw.
type outcome struct {
	clientErr, serverErr error
	client, server       tls.ConnectionState
}

// handshake runs one TLS handshake over loopback TCP and, since TLS 1.3
// lets the client finish before the server has checked its certificate,
// a one-byte exchange that surfaces the server's verdict on both sides.
// It may run on any goroutine.
func handshake(server, client *tls.Config) outcome {
	var o outcome
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		o.clientErr, o.serverErr = err, err
		return o
	}
	defer l.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			o.serverErr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if o.serverErr = tc.HandshakeContext(context.Background()); o.serverErr != nil {
			return
		}
		o.server = tc.ConnectionState()
		if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
			o.serverErr = err
			return
		}
		_, o.serverErr = tc.Write([]byte("k"))
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		l.Close()
		wg.Wait()
		o.clientErr = err
		return o
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	o.clientErr = tc.HandshakeContext(context.Background())
	if o.clientErr == nil {
		o.client = tc.ConnectionState()
		if _, err := tc.Write([]byte("p")); err != nil {
			o.clientErr = err
		} else if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
			o.clientErr = err
		}
	}
	if o.clientErr != nil {
		c.Close() // ends a server still waiting for the first byte
	}
	wg.Wait()
	return o
}

func peerID(t testing.TB, cs tls.ConnectionState) spiffeid.ID {
	t.Helper()
	if len(cs.PeerCertificates) == 0 {
		t.Fatal("no peer certificate")
	}
	id, err := identity.SPIFFEIDFromCert(cs.PeerCertificates[0])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestHandshakeEachALPN(t *testing.T) {
	p := newPKI(t, trustDomain)
	server, client := p.identity(t, catalogID), p.identity(t, frontendID)
	for _, alpn := range []string{mtls.ALPNH2, mtls.ALPNHTTP1, mtls.ALPNTCP} {
		o := handshake(mtls.ServerConfig(server), mtls.ClientConfig(client, alpn, "10.0.0.1:4143", set(otherID, catalogID), []spiffeid.ID{otherID, catalogID}))
		if o.clientErr != nil || o.serverErr != nil {
			t.Fatalf("%s: client %v, server %v", alpn, o.clientErr, o.serverErr)
		}
		for side, cs := range map[string]tls.ConnectionState{"client": o.client, "server": o.server} {
			if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != alpn || cs.DidResume {
				t.Errorf("%s: %s side: version %x, ALPN %q, resumed %v; want TLS 1.3, %q, full handshake", alpn, side, cs.Version, cs.NegotiatedProtocol, cs.DidResume, alpn)
			}
		}
		if got := peerID(t, o.client); got != catalogID {
			t.Errorf("%s: client saw server %s, want %s", alpn, got, catalogID)
		}
		if got := peerID(t, o.server); got != frontendID {
			t.Errorf("%s: server saw client %s, want %s", alpn, got, frontendID)
		}
	}
}

// Secure naming: a server proving an identity the control plane does not
// list for the service is refused by the client, with a NamingError that
// says who it was and who was wanted.
func TestSecureNaming(t *testing.T) {
	p := newPKI(t, trustDomain)
	want := []spiffeid.ID{catalogID, otherID}
	// The impostor's certificate is valid: only its name is wrong.
	impostor := p.identity(t, workloadID(trustDomain, "evil"))
	o := handshake(mtls.ServerConfig(impostor), mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "10.0.0.9:4143", set(want...), want))
	var ne *mtls.NamingError
	if !errors.As(o.clientErr, &ne) {
		t.Fatalf("client error %v, want a *mtls.NamingError", o.clientErr)
	}
	if ne.Addr != "10.0.0.9:4143" || ne.Got != impostor.ID() || !slices.Equal(ne.Want, want) {
		t.Errorf("NamingError{%q, %s, %v}, want {10.0.0.9:4143, %s, %v}", ne.Addr, ne.Got, ne.Want, impostor.ID(), want)
	}
	for _, part := range []string{"secure naming", "10.0.0.9:4143", impostor.ID().String(), catalogID.String(), otherID.String()} {
		if !strings.Contains(ne.Error(), part) {
			t.Errorf("NamingError %q does not mention %q", ne.Error(), part)
		}
	}
	if o.serverErr == nil {
		t.Error("server side finished a connection its client refused")
	}
}

// The inbound has no secure naming of its own (authorization decides who
// may call): any client of the trust domain completes the handshake.
func TestServerAcceptsAnyClientOfTheTrustDomain(t *testing.T) {
	p := newPKI(t, trustDomain)
	server := mtls.ServerConfig(p.identity(t, catalogID))
	for _, sa := range []string{"frontend", "other", "evil"} {
		id := workloadID(trustDomain, sa)
		o := handshake(server, mtls.ClientConfig(p.identity(t, id), mtls.ALPNH2, "a", set(catalogID), nil))
		if o.clientErr != nil || o.serverErr != nil {
			t.Fatalf("%s: client %v, server %v", id, o.clientErr, o.serverErr)
		}
		if got := peerID(t, o.server); got != id {
			t.Errorf("server saw %s, want %s", got, id)
		}
	}
}

func wantPeerCertError(t testing.TB, side string, err error, msgPart string) {
	t.Helper()
	var pe *mtls.PeerCertError
	if !errors.As(err, &pe) {
		t.Errorf("%s error %v, want a *mtls.PeerCertError", side, err)
		return
	}
	if !strings.Contains(pe.Error(), msgPart) {
		t.Errorf("%s error %q, want it to mention %q", side, pe.Error(), msgPart)
	}
}

// Peers from another mesh are refused both ways, whether their CA is
// unknown or trusted for the wrong trust domain.
func TestForeignPeersRefused(t *testing.T) {
	p := newPKI(t, trustDomain)
	foreign := newPKI(t, "other.test")
	foreignID := workloadID("other.test", "catalog")

	// The foreign CA is unknown: its chain does not verify.
	fServer := foreign.identity(t, foreignID)
	o := handshake(mtls.ServerConfig(fServer), mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "a", set(foreignID), nil))
	wantPeerCertError(t, "client", o.clientErr, "certificate signed by unknown authority")
	// (A foreign proxy would refuse our server first; this client
	// presents its certificate whatever the server proves.)
	foreignClient := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		NextProtos:         []string{mtls.ALPNH2},
		Certificates:       []tls.Certificate{*fServer.Cert},
	}
	o = handshake(mtls.ServerConfig(p.identity(t, catalogID)), foreignClient)
	wantPeerCertError(t, "server", o.serverErr, "certificate signed by unknown authority")
	if o.clientErr == nil {
		t.Error("foreign client's connection was not refused")
	}

	// Both CAs trusted (a shared bundle): the chain verifies, the trust
	// domain does not.
	both := x509.NewCertPool()
	for _, r := range append(p.ca.Roots(), foreign.ca.Roots()...) {
		both.AddCert(r)
	}
	local := func(id spiffeid.ID) *mtls.StaticIdentity {
		return &mtls.StaticIdentity{SPIFFEID: id, Cert: p.cert(t, id), Roots: both}
	}
	o = handshake(mtls.ServerConfig(fServer), mtls.ClientConfig(local(frontendID), mtls.ALPNH2, "a", set(foreignID), nil))
	wantPeerCertError(t, "client", o.clientErr, "not in trust domain trellis.test")
	o = handshake(mtls.ServerConfig(local(catalogID)), foreignClient)
	wantPeerCertError(t, "server", o.serverErr, "not in trust domain trellis.test")
	if o.clientErr == nil {
		t.Error("foreign client's connection was not refused")
	}
}

// Certificates a CA does not issue to workloads are refused: a CA
// certificate (the mesh's own intermediate, key and all), and a leaf
// without the extended key usage for its side.
func TestCertificateKindsRefused(t *testing.T) {
	p := newPKI(t, trustDomain)
	interKey, err := identity.ReadKeyFile(filepath.Join(p.dataDir, "ca/intermediate.key"))
	if err != nil {
		t.Fatal(err)
	}
	inter := p.ca.Intermediates()[0]
	caCert := &tls.Certificate{Certificate: [][]byte{inter.Raw}, PrivateKey: interKey, Leaf: inter}
	withCert := func(id spiffeid.ID, c *tls.Certificate) *mtls.StaticIdentity {
		return &mtls.StaticIdentity{SPIFFEID: id, Cert: c, Roots: p.roots}
	}

	o := handshake(mtls.ServerConfig(withCert(catalogID, caCert)), mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "a", set(catalogID), nil))
	wantPeerCertError(t, "client", o.clientErr, "leaf is a CA certificate")
	o = handshake(mtls.ServerConfig(p.identity(t, catalogID)), mtls.ClientConfig(withCert(frontendID, caCert), mtls.ALPNH2, "a", set(catalogID), nil))
	wantPeerCertError(t, "server", o.serverErr, "leaf is a CA certificate")

	// Each side checks the usage of its own direction: a server
	// certificate that may only authenticate clients is refused by the
	// client, and the reverse by the server.
	onlyFor := func(id spiffeid.ID, eku x509.ExtKeyUsage) *mtls.StaticIdentity {
		return withCert(id, p.signed(t, &x509.Certificate{
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{eku},
			URIs:        []*url.URL{id.URL()},
		}))
	}
	o = handshake(mtls.ServerConfig(onlyFor(catalogID, x509.ExtKeyUsageClientAuth)), mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "a", set(catalogID), nil))
	wantPeerCertError(t, "client", o.clientErr, "incompatible key usage")
	o = handshake(mtls.ServerConfig(p.identity(t, catalogID)), mtls.ClientConfig(onlyFor(frontendID, x509.ExtKeyUsageServerAuth), mtls.ALPNH2, "a", set(catalogID), nil))
	wantPeerCertError(t, "server", o.serverErr, "incompatible key usage")

	// The same helper's certificates pass with the right usage, so the
	// refusals above are about the usage alone.
	o = handshake(mtls.ServerConfig(onlyFor(catalogID, x509.ExtKeyUsageServerAuth)), mtls.ClientConfig(onlyFor(frontendID, x509.ExtKeyUsageClientAuth), mtls.ALPNH2, "a", set(catalogID), nil))
	if o.clientErr != nil || o.serverErr != nil {
		t.Errorf("certificates with the right usages: client %v, server %v", o.clientErr, o.serverErr)
	}
}

func TestTLS13Only(t *testing.T) {
	p := newPKI(t, trustDomain)
	server, client := p.identity(t, catalogID), p.identity(t, frontendID)

	// A TLS 1.2 client cannot reach the inbound.
	old := mtls.ClientConfig(client, mtls.ALPNH2, "a", set(catalogID), nil)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	o := handshake(mtls.ServerConfig(server), old)
	if o.serverErr == nil || o.clientErr == nil {
		t.Errorf("TLS 1.2 client: client %v, server %v; want both to fail", o.clientErr, o.serverErr)
	} else if !strings.Contains(o.serverErr.Error(), "unsupported versions") {
		t.Errorf("TLS 1.2 client refused with %v, want an unsupported version error", o.serverErr)
	}

	// The outbound does not settle for a TLS 1.2 server.
	oldServer := mtls.ServerConfig(server)
	oldServer.MaxVersion = tls.VersionTLS12
	o = handshake(oldServer, mtls.ClientConfig(client, mtls.ALPNH2, "a", set(catalogID), nil))
	if o.clientErr == nil || !strings.Contains(o.clientErr.Error(), "protocol version") {
		t.Errorf("TLS 1.2 server: client error %v, want a protocol version error", o.clientErr)
	}
}

func TestALPNMismatchRefused(t *testing.T) {
	p := newPKI(t, trustDomain)
	server, client := p.identity(t, catalogID), p.identity(t, frontendID)

	// A server that speaks none of the client's protocols refuses it.
	h2Only := mtls.ServerConfig(server)
	h2Only.NextProtos = []string{mtls.ALPNH2}
	o := handshake(h2Only, mtls.ClientConfig(client, mtls.ALPNTCP, "a", set(catalogID), nil))
	if o.clientErr == nil || o.serverErr == nil {
		t.Errorf("disjoint ALPN: client %v, server %v; want both to fail", o.clientErr, o.serverErr)
	}

	// A server that ignores ALPN is refused by the client, which will
	// not guess the carriage.
	noALPN := mtls.ServerConfig(server)
	noALPN.NextProtos = nil
	o = handshake(noALPN, mtls.ClientConfig(client, mtls.ALPNTCP, "10.0.0.1:4143", set(catalogID), nil))
	if o.clientErr == nil || !strings.Contains(o.clientErr.Error(), `negotiated protocol "", want "trellis-tcp/1"`) {
		t.Errorf("no ALPN: client error %v, want the negotiated protocol named", o.clientErr)
	}

	// An unknown protocol offered to the inbound is refused too.
	odd := mtls.ClientConfig(client, "h3", "a", set(catalogID), nil)
	o = handshake(mtls.ServerConfig(server), odd)
	if o.serverErr == nil {
		t.Errorf("unknown ALPN accepted by the inbound (client error %v)", o.clientErr)
	}
}

// Missing certificates and bundles fail the handshake with errors the
// proxy tells apart in its metrics.
func TestMissingCertificateOrBundle(t *testing.T) {
	p := newPKI(t, trustDomain)
	server, client := p.identity(t, catalogID), p.identity(t, frontendID)

	o := handshake(mtls.ServerConfig(mtls.NoIdentity{}), mtls.ClientConfig(client, mtls.ALPNH2, "a", set(catalogID), nil))
	if !errors.Is(o.serverErr, mtls.ErrNoCertificate) || o.clientErr == nil {
		t.Errorf("server without a certificate: server %v, client %v; want ErrNoCertificate and a failure", o.serverErr, o.clientErr)
	}
	// (A client with a bundle but no certificate yet: without a bundle it
	// would refuse the server first.)
	certPending := &mtls.StaticIdentity{SPIFFEID: frontendID, Roots: p.roots}
	o = handshake(mtls.ServerConfig(server), mtls.ClientConfig(certPending, mtls.ALPNH2, "a", set(catalogID), nil))
	if !errors.Is(o.clientErr, mtls.ErrNoCertificate) {
		t.Errorf("client without a certificate: %v, want ErrNoCertificate", o.clientErr)
	}
	o = handshake(mtls.ServerConfig(server), mtls.ClientConfig(mtls.NoIdentity{}, mtls.ALPNH2, "a", set(catalogID), nil))
	if !errors.Is(o.clientErr, mtls.ErrNoBundle) {
		t.Errorf("client with NoIdentity: %v, want ErrNoBundle", o.clientErr)
	}

	// A client that presents no certificate at all (not a proxy).
	certless := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{mtls.ALPNH2}}
	o = handshake(mtls.ServerConfig(server), certless)
	if !errors.Is(o.serverErr, mtls.ErrNoPeerCert) {
		t.Errorf("certless client: server error %v, want ErrNoPeerCert", o.serverErr)
	}
	if o.clientErr == nil {
		t.Error("certless client's connection was not refused")
	}

	noBundle := &mtls.StaticIdentity{SPIFFEID: catalogID, Cert: server.Cert}
	o = handshake(mtls.ServerConfig(noBundle), mtls.ClientConfig(client, mtls.ALPNH2, "a", set(catalogID), nil))
	if !errors.Is(o.serverErr, mtls.ErrNoBundle) {
		t.Errorf("server without a bundle: %v, want ErrNoBundle", o.serverErr)
	}
	noBundle = &mtls.StaticIdentity{SPIFFEID: frontendID, Cert: client.Cert}
	o = handshake(mtls.ServerConfig(server), mtls.ClientConfig(noBundle, mtls.ALPNH2, "a", set(catalogID), nil))
	if !errors.Is(o.clientErr, mtls.ErrNoBundle) {
		t.Errorf("client without a bundle: %v, want ErrNoBundle", o.clientErr)
	}
}

// rotating is an Identity whose certificate is swapped, as the workload
// certificate manager does on renewal.
type rotating struct {
	id    spiffeid.ID
	cert  atomic.Pointer[tls.Certificate]
	roots *x509.CertPool
}

func (r *rotating) ID() spiffeid.ID               { return r.id }
func (r *rotating) Certificate() *tls.Certificate { return r.cert.Load() }
func (r *rotating) Bundle() *x509.CertPool        { return r.roots }

// Every handshake presents the certificate current at that moment, and
// a client that kept a session cache is not let past the certificate
// exchange (no resumption).
func TestCurrentCertificatePerHandshake(t *testing.T) {
	p := newPKI(t, trustDomain)
	server := &rotating{id: catalogID, roots: p.roots}
	client := &rotating{id: frontendID, roots: p.roots}
	serverCfg := mtls.ServerConfig(server)
	clientCfg := mtls.ClientConfig(client, mtls.ALPNH2, "a", set(catalogID), nil)
	// The cache is keyed by ServerName (else by the address, which changes
	// with every handshake here).
	clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	clientCfg.ServerName = "catalog"
	seenServer, seenClient := map[string]bool{}, map[string]bool{}
	for i := range 3 {
		server.cert.Store(p.cert(t, catalogID))
		client.cert.Store(p.cert(t, frontendID))
		o := handshake(serverCfg, clientCfg)
		if o.clientErr != nil || o.serverErr != nil {
			t.Fatalf("handshake %d: client %v, server %v", i, o.clientErr, o.serverErr)
		}
		if o.client.DidResume || o.server.DidResume {
			t.Fatalf("handshake %d resumed a session", i)
		}
		ss, cs := o.client.PeerCertificates[0].SerialNumber.String(), o.server.PeerCertificates[0].SerialNumber.String()
		if ss != server.cert.Load().Leaf.SerialNumber.String() || cs != client.cert.Load().Leaf.SerialNumber.String() {
			t.Fatalf("handshake %d: peers presented serials %s and %s, not the current ones", i, ss, cs)
		}
		seenServer[ss], seenClient[cs] = true, true
	}
	if len(seenServer) != 3 || len(seenClient) != 3 {
		t.Fatalf("3 rotations, but %d server and %d client certificates seen", len(seenServer), len(seenClient))
	}
}

// Configs are shared by every connection of a listener or pool: many
// handshakes at once, allowed and refused, all get their own verdict.
func TestConcurrentHandshakes(t *testing.T) {
	p := newPKI(t, trustDomain)
	serverCfg := mtls.ServerConfig(p.identity(t, catalogID))
	good := mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "a", set(catalogID), nil)
	misnamed := mtls.ClientConfig(p.identity(t, frontendID), mtls.ALPNH2, "a", set(otherID), nil)
	const n = 100
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := good
			if i%4 == 3 {
				cfg = misnamed
			}
			o := handshake(serverCfg, cfg)
			var ne *mtls.NamingError
			switch {
			case cfg == good && (o.clientErr != nil || o.serverErr != nil):
				failures.Add(1)
				t.Errorf("handshake %d: client %v, server %v", i, o.clientErr, o.serverErr)
			case cfg == misnamed && !errors.As(o.clientErr, &ne):
				failures.Add(1)
				t.Errorf("handshake %d: client %v, want a NamingError", i, o.clientErr)
			}
		}()
	}
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d handshakes got the wrong verdict", f, n)
	}
}
