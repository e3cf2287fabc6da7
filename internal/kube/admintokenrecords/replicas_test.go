package admintokenrecords_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/admintokenrecords"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Two control-plane replicas, each with its own data dir and store, keep
// admin-token records in Secrets on one API server: a token created
// through A's admin API is listed by B and authenticates on B (20 calls
// alternating between A and B all succeed); revoked through B, it is
// refused (401) by A on the next call and listed revoked by A. A valid
// token's name is a conflict on the other replica; two revocations of
// another token at once, one per replica, both succeed. No Secret holds a
// token.
func TestAdminTokensSharedByReplicas(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Namespace(t, install.Namespace, nil)
	replica := func() *cptest.ControlPlane {
		return cptest.StartControlPlane(t, controlplane.Config{AdminTokenRecords: admintokenrecords.New(c.Client, install.Namespace)})
	}
	a, b := replica(), replica()
	ca, cb := a.Client(t), b.Client(t)

	tok, err := ca.CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "security-admin"})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := cb.ListAdminTokens(ctx)
	if err != nil || len(listed) != 1 || listed[0].Name != "ci" || listed[0].Role != "security-admin" || !listed[0].ExpiresAt.Equal(tok.Info.ExpiresAt) {
		t.Fatalf("B lists %+v (%v), want %+v", listed, err, tok.Info)
	}
	as, bs := *ca, *cb
	as.Token, bs.Token = tok.Token, tok.Token
	for i := range 20 {
		if _, err := []*adminapi.Client{&as, &bs}[i%2].ListAdminTokens(ctx); err != nil {
			t.Fatalf("call %d with the token on %s: %v", i, "AB"[i%2:i%2+1], err)
		}
	}
	var se *adminapi.StatusError
	if _, err := cb.CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "viewer"}); !errors.As(err, &se) || se.Status != http.StatusConflict {
		t.Errorf("create a valid token's name on B: %v, want 409", err)
	}

	if _, err := cb.RevokeAdminToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*adminapi.Client{&as, &bs} {
		if _, err := cl.ListAdminTokens(ctx); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
			t.Errorf("call with the revoked token on %s: %v, want 401", cl.BaseURL, err)
		}
	}
	listed, err = ca.ListAdminTokens(ctx)
	if err != nil || len(listed) != 1 || listed[0].RevokedAt == nil {
		t.Errorf("A lists %+v (%v), want the token revoked", listed, err)
	}
	if _, err := ca.RevokeAdminToken(ctx, "nobody"); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("revoke an unknown token: %v, want 404", err)
	}

	other, err := cb.CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Name: "viewer", Role: "viewer", Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, cl := range []*adminapi.Client{ca, cb} {
		wg.Go(func() {
			if info, err := cl.RevokeAdminToken(ctx, "viewer"); err != nil || info.RevokedAt == nil {
				t.Errorf("revoke from both replicas at once: %+v %v", info, err)
			}
		})
	}
	wg.Wait()

	secrets, err := c.Client.CoreV1().Secrets(install.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range secrets.Items {
		for _, v := range s.Data {
			if strings.Contains(string(v), tok.Token[len("trellis-admin.ci."):]) || strings.Contains(string(v), other.Token[len("trellis-admin.viewer."):]) {
				t.Errorf("secret %s holds a token", s.Name)
			}
		}
		if s.Labels[admintokenrecords.LabelAdminToken] == "true" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d records, want 2", n)
	}
}
