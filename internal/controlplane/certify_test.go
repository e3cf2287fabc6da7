package controlplane_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// dialIdentity connects to the control plane's gRPC port verifying it with
// ca.crt only (as a proxy given --ca-file does), optionally presenting a
// client certificate.
func dialIdentity(t *testing.T, cp *cptest.ControlPlane, clientCert *tls.Certificate) pb.IdentityClient {
	t.Helper()
	cfg := testutil.ControlTLS(t, cp.DataDir, clientCert)
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIdentityClient(conn)
}

// certify obtains a leaf for want with token and checks its chain up to
// ca.crt. It returns the leaf as a TLS certificate with its key.
func certify(t *testing.T, cp *cptest.ControlPlane, token, want string) *tls.Certificate {
	t.Helper()
	csr, key := testutil.NewCSR(t, want)
	resp, err := dialIdentity(t, cp, nil).Certify(context.Background(), &pb.CertifyRequest{Csr: csr, Token: token})
	if err != nil {
		t.Fatalf("certify %s: %v", want, err)
	}
	return checkLeaf(t, cp, resp, want, key)
}

func checkLeaf(t *testing.T, cp *cptest.ControlPlane, resp *pb.CertifyResponse, want string, key crypto.Signer) *tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, der := range resp.GetIntermediates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		interPool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: interPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("leaf does not verify up to ca.crt: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf SANs: URIs %v DNS %v IPs %v, want only %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, want)
	}
	if resp.GetSpiffeId() != want || !resp.GetExpiresAt().AsTime().Equal(leaf.NotAfter) || len(resp.GetTrustBundle()) != len(roots) {
		t.Errorf("response spiffe_id %q expires %v bundle %d; want %s, %v, %d", resp.GetSpiffeId(), resp.GetExpiresAt().AsTime(), len(resp.GetTrustBundle()), want, leaf.NotAfter, len(roots))
	}
	c := &tls.Certificate{Certificate: append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...), PrivateKey: key, Leaf: leaf}
	return c
}

func TestCertifyWithJoinToken(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := context.Background()
	// The mesh's workloadTTL sets the leaf lifetime.
	if _, err := cp.Client(t).Apply(ctx, decode(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {certificates: {workloadTTL: 2h}}\n"), false); err != nil {
		t.Fatal(err)
	}
	tok, err := cp.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop", ServiceAccount: "web-sa"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Info.SPIFFEID != "spiffe://trellis.local/ns/shop/sa/web-sa" {
		t.Errorf("token SPIFFE ID %q", tok.Info.SPIFFEID)
	}
	start := time.Now()
	leaf := certify(t, cp, tok.Token, tok.Info.SPIFFEID)
	life := leaf.Leaf.NotAfter.Sub(start)
	if life < 2*time.Hour-time.Minute || life > 2*time.Hour+time.Minute {
		t.Errorf("leaf lives %s, want the mesh's workloadTTL 2h", life)
	}
	if skew := start.Sub(leaf.Leaf.NotBefore); skew > time.Minute+5*time.Second || skew < 0 {
		t.Errorf("leaf backdated by %s, want at most 1m", skew)
	}

	// Renewal: present the current leaf, no token.
	csr, key := testutil.NewCSR(t, tok.Info.SPIFFEID)
	resp, err := dialIdentity(t, cp, leaf).Certify(ctx, &pb.CertifyRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	renewed := checkLeaf(t, cp, resp, tok.Info.SPIFFEID, key)
	if renewed.Leaf.SerialNumber.Cmp(leaf.Leaf.SerialNumber) == 0 {
		t.Errorf("renewal returned the same serial")
	}
	// Renewal cannot change identity.
	csr, _ = testutil.NewCSR(t, "spiffe://trellis.local/ns/shop/sa/admin")
	_, err = dialIdentity(t, cp, leaf).Certify(ctx, &pb.CertifyRequest{Csr: csr})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("renewal for another identity: %v, want PermissionDenied", err)
	}
}

func TestCertifyRefusals(t *testing.T) {
	clk := clock.NewFake(time.Now())
	cp := cptest.StartControlPlane(t, controlplane.Config{Clock: clk})
	other := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := context.Background()
	c := cp.Client(t)
	newToken := func(ttl string) adminapi.CreateTokenResponse {
		t.Helper()
		tok, err := c.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := newToken("1h")
	want := good.Info.SPIFFEID
	revoked := newToken("1h")
	if _, err := c.RevokeToken(ctx, revoked.Info.ID); err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	short := newToken("1m")
	goodCSR, _ := testutil.NewCSR(t, want)
	otherCSR, _ := testutil.NewCSR(t, "spiffe://trellis.local/ns/shop/sa/db")
	tampered := append([]byte(nil), goodCSR...)
	tampered[len(tampered)-5] ^= 0xff

	// The good token works; every variation below must not.
	certify(t, cp, good.Token, want)
	for _, tc := range []struct {
		name     string
		token    string
		csr      []byte
		advance  time.Duration
		want     codes.Code
		contains string
	}{
		{"no token no cert", "", goodCSR, 0, codes.Unauthenticated, "no join token"},
		{"garbage token", "not-a-jwt", goodCSR, 0, codes.Unauthenticated, "join token rejected"},
		{"token of another mesh", foreign.Token, goodCSR, 0, codes.Unauthenticated, "join token rejected"},
		{"tampered token", good.Token[:len(good.Token)-4] + "AAAA", goodCSR, 0, codes.Unauthenticated, "join token rejected"},
		{"revoked token", revoked.Token, goodCSR, 0, codes.PermissionDenied, "revoked"},
		{"csr for another identity", good.Token, otherCSR, 0, codes.PermissionDenied, "not entitled"},
		{"malformed csr", good.Token, []byte("garbage"), 0, codes.InvalidArgument, "bad certificate signing request"},
		{"tampered csr", good.Token, tampered, 0, codes.InvalidArgument, "bad certificate signing request"},
		{"empty csr", good.Token, nil, 0, codes.InvalidArgument, "csr is empty"},
		{"huge csr", good.Token, make([]byte, 17<<10), 0, codes.InvalidArgument, "more than"},
		{"expired token", short.Token, goodCSR, 2 * time.Minute, codes.Unauthenticated, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Advance(tc.advance)
			_, err := dialIdentity(t, cp, nil).Certify(ctx, &pb.CertifyRequest{Csr: tc.csr, Token: tc.token})
			if status.Code(err) != tc.want || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("got %v, want %s containing %q", err, tc.want, tc.contains)
			}
			if err != nil && strings.Contains(err.Error(), good.Token) {
				t.Errorf("error leaks the token")
			}
		})
	}
}

func TestControlPlaneIdentityIsNeverIssued(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	_, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: "x", Namespace: "trellis-system", ServiceAccount: "control"})
	if !adminapi.IsUserError(err) || !strings.Contains(err.Error(), "control plane's own identity") {
		t.Errorf("token for the control plane's identity: %v, want 400", err)
	}
}

func TestRenewalStopsOnceTokensAreRevoked(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := context.Background()
	tok, err := cp.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := certify(t, cp, tok.Token, tok.Info.SPIFFEID)
	csr, _ := testutil.NewCSR(t, tok.Info.SPIFFEID)
	if _, err := dialIdentity(t, cp, leaf).Certify(ctx, &pb.CertifyRequest{Csr: csr}); err != nil {
		t.Fatalf("renewal with a live token: %v", err)
	}
	if _, err := cp.Client(t).RevokeToken(ctx, tok.Info.ID); err != nil {
		t.Fatal(err)
	}
	_, err = dialIdentity(t, cp, leaf).Certify(ctx, &pb.CertifyRequest{Csr: csr})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("renewal after revoking the only token: %v, want PermissionDenied naming revocation", err)
	}
}
