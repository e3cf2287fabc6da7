package admintokenrecords_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/kube/admintokenrecords"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

var _ controlplane.AdminTokenRecords = (*admintokenrecords.Records)(nil)

func record(name, role string) admintokens.Record {
	now := time.Now().UTC().Truncate(time.Second)
	return admintokens.Record{
		AdminTokenInfo: adminapi.AdminTokenInfo{Name: name, Role: role, Namespaces: []string{"shop"}, CreatedBy: "root", CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		SHA256:         strings.Repeat("ab", 32),
	}
}

func names(recs []admintokens.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Name)
	}
	return out
}

// The records' operations on a real API server, as the control plane's
// ServiceAccount of the install (so its Role is enough): create (twice is
// a conflict), get, list (ordered by name, other Secrets left out), update
// at a resourceVersion (a stale one is a conflict, a missing record is not
// found), and concurrent revokes of one record, of which exactly one wins.
func TestRecords(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := controlPlaneClient(t, c)
	r := admintokenrecords.New(client, install.Namespace)

	a, b := record("ci", "operator"), record("audit", "viewer")
	for _, rec := range []admintokens.Record{a, b} {
		if err := r.Create(ctx, rec); err != nil {
			t.Fatalf("create %s: %v", rec.Name, err)
		}
	}
	if err := r.Create(ctx, a); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("create twice: %v, want ErrConflict", err)
	}
	if err := r.Create(ctx, record("Not_A_Label", "viewer")); err == nil {
		t.Errorf("create with a bad name: no error")
	}
	// A Secret that is no record is neither read nor listed.
	if _, err := c.Client.CoreV1().Secrets(install.Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: admintokenrecords.NamePrefix + "other"}, Data: map[string][]byte{"x": []byte("y")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	got, version, err := r.Get(ctx, a.Name)
	if err != nil || version == "" || !reflect.DeepEqual(got, a) {
		t.Fatalf("get: %+v %q %v, want %+v", got, version, err, a)
	}
	for _, name := range []string{"other", "nobody", "../x", "AB", ""} {
		if _, _, err := r.Get(ctx, name); !errors.Is(err, adminapi.ErrNotFound) {
			t.Errorf("get %q: %v, want ErrNotFound", name, err)
		}
	}
	all, err := r.List(ctx)
	if err != nil || !reflect.DeepEqual(names(all), []string{"audit", "ci"}) {
		t.Errorf("list: %v %v, want audit ci", names(all), err)
	}

	// The Secret: labelled, holding the record's JSON only.
	s, err := c.Client.CoreV1().Secrets(install.Namespace).Get(ctx, admintokenrecords.NamePrefix+a.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Labels[admintokenrecords.LabelManagedBy] != "trellis" || s.Labels[admintokenrecords.LabelAdminToken] != "true" || len(s.Data) != 1 || !strings.Contains(string(s.Data[admintokenrecords.DataKey]), a.SHA256) {
		t.Errorf("secret: labels %v data %q", s.Labels, s.Data)
	}

	revoked := got
	at := time.Now().UTC().Truncate(time.Second)
	revoked.RevokedAt = &at
	if err := r.Update(ctx, revoked, version); err != nil {
		t.Fatalf("update: %v", err)
	}
	if err := r.Update(ctx, revoked, version); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("update at a stale version: %v, want ErrConflict", err)
	}
	if err := r.Update(ctx, record("gone", "viewer"), version); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("update a missing record: %v, want ErrNotFound", err)
	}
	if got, _, err := r.Get(ctx, a.Name); err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(at) {
		t.Errorf("after update: %+v %v", got, err)
	}

	// Two replicas revoking at once from the same read: one wins.
	for round := range 5 {
		rec, version, err := r.Get(ctx, b.Name)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				at := time.Now().UTC().Add(time.Duration(i) * time.Second)
				next := rec
				next.RevokedAt = &at
				errs[i] = admintokenrecords.New(client, install.Namespace).Update(ctx, next, version)
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, adminapi.ErrConflict):
				t.Errorf("round %d: %v, want nil or ErrConflict", round, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d updates won (%v), want 1", round, won, errs)
		}
	}
}

// The admin-token service on the Kubernetes records, as the install's
// ServiceAccount, with two services standing for two replicas: a token
// created on one authenticates on the other, is listed by both, revoked on
// the other is refused on the first at once, its name is reused after the
// revocation (replacing the Secret) but not while a token of that name is
// valid, and an expired token is refused. No Secret holds a token.
func TestService(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := controlPlaneClient(t, c)
	var mu sync.Mutex
	now := time.Now().UTC()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	a := admintokens.New(admintokenrecords.New(client, install.Namespace), clock)
	b := admintokens.New(admintokenrecords.New(client, install.Namespace), clock)
	root := adminauth.RootPrincipal()

	resp, err := a.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "operator", Namespaces: []string{"shop,ops"}, TTL: "1h"}, root)
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Authenticate(ctx, resp.Token)
	if err != nil || p.Name != "ci" || p.Role != adminauth.Operator || strings.Join(p.Namespaces, ",") != "ops,shop" {
		t.Fatalf("authenticate on the other service: %+v, %v", p, err)
	}
	if _, err := b.Authenticate(ctx, resp.Token[:len(resp.Token)-1]+"x"); !errors.Is(err, admintokens.ErrUnauthenticated) {
		t.Errorf("a wrong secret: %v, want ErrUnauthenticated", err)
	}
	if _, err := b.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "viewer"}, root); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("create a valid token's name on the other service: %v, want ErrConflict", err)
	}
	items, err := b.List(ctx)
	if err != nil || len(items) != 1 || items[0].Name != "ci" || items[0].CreatedBy != "root" || items[0].RevokedAt != nil {
		t.Errorf("list on the other service: %+v, %v", items, err)
	}
	if _, err := b.Revoke(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, resp.Token); !errors.Is(err, admintokens.ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked on B, authenticate on A: %v, want revoked", err)
	}
	if info, err := a.Revoke(ctx, "ci"); err != nil || info.RevokedAt == nil {
		t.Errorf("revoke twice: %+v %v", info, err)
	}
	if _, err := a.Revoke(ctx, "nobody"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("revoke an unknown token: %v, want ErrNotFound", err)
	}

	// The revoked name is reused: the new token works, the old one not.
	again, err := b.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "viewer", TTL: "1m"}, root)
	if err != nil {
		t.Fatalf("reuse a revoked token's name: %v", err)
	}
	if p, err := a.Authenticate(ctx, again.Token); err != nil || p.Role != adminauth.Viewer {
		t.Errorf("the new token on A: %+v %v", p, err)
	}
	if _, err := a.Authenticate(ctx, resp.Token); !errors.Is(err, admintokens.ErrUnauthenticated) {
		t.Errorf("the old token after its name's reuse: %v, want ErrUnauthenticated", err)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if _, err := a.Authenticate(ctx, again.Token); !errors.Is(err, admintokens.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v, want expired", err)
	}
	// Expired, its name is free again.
	if _, err := a.Create(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "viewer"}, root); err != nil {
		t.Errorf("reuse an expired token's name: %v", err)
	}

	secrets, err := c.Client.CoreV1().Secrets(install.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range secrets.Items {
		for _, v := range s.Data {
			for _, tok := range []string{resp.Token, again.Token} {
				if strings.Contains(string(v), tok[len("trellis-admin.ci."):]) {
					t.Errorf("secret %s holds a token", s.Name)
				}
			}
		}
		if s.Labels[admintokenrecords.LabelAdminToken] == "true" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// controlPlaneClient applies the install's namespace, ServiceAccount and
// RBAC and returns a client acting as that ServiceAccount.
func controlPlaneClient(t *testing.T, c *kubetest.Cluster) kubernetes.Interface {
	t.Helper()
	objs, err := install.Objects(install.Options{Image: "img", ProxyImage: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	var rbac []runtime.Object
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace, *corev1.ServiceAccount, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *rbacv1.Role, *rbacv1.RoleBinding:
			rbac = append(rbac, o)
		}
	}
	c.Apply(t, rbac)
	tok, err := c.Token(context.Background(), install.Namespace, install.Name, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc := rest.AnonymousClientConfig(c.Config)
	rc.BearerToken = tok
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return client
}
