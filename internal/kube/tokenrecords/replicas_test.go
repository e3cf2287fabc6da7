package tokenrecords_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/kube/tokenrecords"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// Two control-plane replicas, each with its own data dir and store but
// the same CA and token key (as Kubernetes mode's Secret gives them) and
// both reviewing ServiceAccount tokens, keep join-token records in
// ConfigMaps: a token issued through A is listed by B, 50 Certify calls
// with it alternating between A and B all succeed, a certificate from A
// renews on B, and a VM's proxy joins B with it (config stream included).
// Revoked through B, it is refused by A (Certify and renewal) and listed
// revoked by A; two revocations of another token at once, one per
// replica, both succeed. No ConfigMap holds a token.
func TestRecordsSharedByReplicas(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Namespace(t, install.Namespace, nil)
	td := spiffeid.RequireTrustDomainFromString(controlplane.DefaultTrustDomain)
	replica := func(dataDir string) *cptest.ControlPlane {
		return cptest.StartControlPlane(t, controlplane.Config{
			DataDir:        dataDir,
			TokenRecords:   tokenrecords.New(c.Client, install.Namespace),
			WorkloadTokens: &satoken.Reviewer{Client: c.Client, TrustDomain: td},
		})
	}
	a := replica("")
	dirB := filepath.Join(t.TempDir(), "control")
	shareCA(t, a.DataDir, dirB)
	b := replica(dirB)
	ca, cb := a.Client(t), b.Client(t)

	tok, err := ca.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop", ServiceAccount: "web"})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := cb.ListTokens(ctx)
	if err != nil || len(listed) != 1 || listed[0].ID != tok.Info.ID || listed[0].SPIFFEID != tok.Info.SPIFFEID || !listed[0].ExpiresAt.Equal(tok.Info.ExpiresAt) {
		t.Fatalf("B lists %+v (%v), want %+v", listed, err, tok.Info)
	}
	var leafA *tls.Certificate
	for i := range 50 {
		cp := []*cptest.ControlPlane{a, b}[i%2]
		leaf, err := certify(t, cp, nil, tok.Token, tok.Info.SPIFFEID)
		if err != nil {
			t.Fatalf("certify %d on %s: %v", i, "AB"[i%2:i%2+1], err)
		}
		if i == 0 {
			leafA = leaf
		}
	}
	if _, err := certify(t, b, leafA, "", tok.Info.SPIFFEID); err != nil {
		t.Fatalf("renew A's certificate on B: %v", err)
	}
	meshtest.StartProxy(t, b, proxy.Config{Service: "web", ServiceAccount: "web", Token: tok.Token})

	if _, err := cb.RevokeToken(ctx, tok.Info.ID); err != nil {
		t.Fatal(err)
	}
	for _, cp := range []*cptest.ControlPlane{a, b} {
		if _, err := certify(t, cp, nil, tok.Token, tok.Info.SPIFFEID); status.Code(err) != codes.PermissionDenied {
			t.Errorf("certify with the revoked token: %v, want PermissionDenied", err)
		}
		if _, err := certify(t, cp, leafA, "", tok.Info.SPIFFEID); status.Code(err) != codes.PermissionDenied {
			t.Errorf("renew after the revocation: %v, want PermissionDenied", err)
		}
	}
	listed, err = ca.ListTokens(ctx)
	if err != nil || len(listed) != 1 || listed[0].RevokedAt == nil {
		t.Errorf("A lists %+v (%v), want the token revoked", listed, err)
	}
	var se *adminapi.StatusError
	if _, err := ca.RevokeToken(ctx, "00"); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("revoke an unknown token: %v, want 404", err)
	}

	other, err := cb.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "db", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, cl := range []*adminapi.Client{ca, cb} {
		wg.Go(func() {
			if info, err := cl.RevokeToken(ctx, other.Info.ID); err != nil || info.RevokedAt == nil {
				t.Errorf("revoke from both replicas at once: %+v %v", info, err)
			}
		})
	}
	wg.Wait()

	cms, err := c.Client.CoreV1().ConfigMaps(install.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, cm := range cms.Items {
		for _, v := range cm.Data {
			if strings.Contains(v, tok.Token) || strings.Contains(v, other.Token) {
				t.Errorf("configmap %s holds a token", cm.Name)
			}
		}
		if cm.Labels[tokenrecords.LabelJoinToken] == "true" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d records, want 2", n)
	}
}

// shareCA copies the CA's files (ca.crt and ca/, the token key included)
// from one data dir into a new one, as the CA Secret does for replicas.
func shareCA(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		switch {
		case d.IsDir():
			if rel == "." || rel == "ca" {
				return os.MkdirAll(filepath.Join(to, rel), 0o700)
			}
			return filepath.SkipDir
		case rel != identity.RootCertFile && !strings.HasPrefix(rel, "ca"+string(filepath.Separator)):
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// certify asks cp for a certificate for want, with token or by renewal
// (presenting leaf), and checks it verifies up to cp's ca.crt.
func certify(t *testing.T, cp *cptest.ControlPlane, leaf *tls.Certificate, token, want string) (*tls.Certificate, error) {
	t.Helper()
	cfg := testutil.ControlTLS(t, cp.DataDir, leaf)
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	csr, key := testutil.NewCSR(t, want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewIdentityClient(conn).Certify(ctx, &pb.CertifyRequest{Csr: csr, Token: token})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range resp.GetIntermediates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || resp.GetSpiffeId() != want {
		t.Fatalf("certificate for %s from %s: %v (spiffe id %s)", want, cp.GRPCAddr(), err, resp.GetSpiffeId())
	}
	return &tls.Certificate{Certificate: append([][]byte{resp.GetLeaf()}, resp.GetIntermediates()...), PrivateKey: key, Leaf: cert}, nil
}
