package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// A proxy with a real projected ServiceAccount token (TokenRequest API,
// bound to its pod, audience trellis) joins a control plane that reviews
// tokens with a real API server: it gets spiffe://TD/ns/shop/sa/catalog and
// becomes ready; its certificate renews with the token read again from its
// file. A token for another audience, or one whose pod is gone, gets no
// certificate, and each refusal is an audit event.
func TestProxyJoinsWithAServiceAccountToken(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	core := c.Client.CoreV1()
	c.Namespace(t, "shop", nil)
	if _, err := core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "catalog"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"catalog-1", "catalog-2"} {
		if _, err := core.Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{ServiceAccountName: "catalog", Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	td := spiffeid.RequireTrustDomainFromString(controlplane.DefaultTrustDomain)
	cp := meshtest.StartControlPlane(t, controlplane.Config{
		WorkloadTokens: &satoken.Reviewer{Client: c.Client, TrustDomain: td},
		AuditSinks:     []string{"file://" + sink},
		WorkloadTTL:    6 * time.Second, // renewal within the test
	})
	token, err := c.Token(ctx, "shop", "catalog", "catalog-1", time.Hour, satoken.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	p := meshtest.StartProxy(t, cp, proxy.Config{
		Service: "catalog", Namespace: "shop", ServiceAccount: "catalog",
		Token: token, TokenFile: tokenFile, AppAddr: startApp(t, http.NotFoundHandler()),
	})
	if got := p.Identity().ID().String(); got != "spiffe://trellis.local/ns/shop/sa/catalog" {
		t.Errorf("proxy identity %s", got)
	}
	first := p.Identity().Certificate().Leaf.SerialNumber.String()
	testutil.EventuallyWithin(t, 20*time.Second, "a renewal with the token", func() bool {
		return p.Identity().Certificate().Leaf.SerialNumber.String() != first
	})

	// A renewal with the certificate alone (no token) is refused: it would
	// outlive the pod.
	rootsPEM, err := os.ReadFile(filepath.Join(cp.DataDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootsPEM)
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{*p.Identity().Certificate()},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	csr, _ := testutil.NewCSR(t, "spiffe://trellis.local/ns/shop/sa/catalog")
	_, err = pb.NewIdentityClient(conn).Certify(ctx, &pb.CertifyRequest{Csr: csr})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "renews with its ServiceAccount token") {
		t.Errorf("renewal without the token: %v, want PermissionDenied", err)
	}

	// Refused: another audience; a pod that is gone.
	other, err := c.Token(ctx, "shop", "catalog", "catalog-2", time.Hour, "vault")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := c.Token(ctx, "shop", "catalog", "catalog-2", time.Hour, satoken.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	if err := core.Pods("shop").Delete(ctx, "catalog-2", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"wrong audience": other, "deleted pod": gone} {
		bad, err := proxy.New(proxy.Config{
			Service: "catalog", Namespace: "shop", ServiceAccount: "catalog", Token: tok,
			ControlAddr: cp.GRPCAddr(), CAFile: filepath.Join(cp.DataDir, "ca.crt"),
			InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", HTTPProxyAddr: "off", Logger: testutil.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		err = bad.Start(ctx)
		if err == nil {
			_ = bad.Shutdown(ctx)
			t.Errorf("%s: the proxy got a certificate", name)
			continue
		}
		if !strings.Contains(err.Error(), "service account token refused") {
			t.Errorf("%s: %v", name, err)
		}
	}
	testutil.Eventually(t, "two refusals audited", func() bool {
		b, _ := os.ReadFile(sink)
		return strings.Count(string(b), `"cert.refused"`) >= 2
	})
	b, _ := os.ReadFile(sink)
	if strings.Contains(string(b), other) || strings.Contains(string(b), gone) {
		t.Error("the audit log quotes a token")
	}
}
