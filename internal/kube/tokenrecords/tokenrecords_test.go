package tokenrecords_test

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
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/kube/tokenrecords"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

var _ controlplane.TokenRecords = (*tokenrecords.Records)(nil)

func record(id, spiffeID, service string) adminapi.TokenInfo {
	now := time.Now().UTC().Truncate(time.Second)
	ns, sa, _ := strings.Cut(strings.TrimPrefix(spiffeID, "spiffe://trellis.local/ns/"), "/sa/")
	return adminapi.TokenInfo{
		ID: id, SPIFFEID: spiffeID, Service: service, Namespace: ns, ServiceAccount: sa,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour),
	}
}

func ids(infos []adminapi.TokenInfo) []string {
	out := []string{}
	for _, i := range infos {
		out = append(out, i.ID)
	}
	return out
}

// The records' operations on a real API server, as the control plane's
// ServiceAccount of the install (so its Role and ClusterRole are enough):
// create (twice is a conflict), get, list and list by identity (ordered by
// ID, other ConfigMaps left out), update at a resourceVersion (a stale one
// is a conflict, a missing record is not found), and concurrent revokes
// of one record, of which exactly one wins each round.
func TestRecords(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := controlPlaneClient(t, c)
	r := tokenrecords.New(client, install.Namespace)

	web := "spiffe://trellis.local/ns/shop/sa/web"
	a, b, other := record("0b", web, "web"), record("0a", web, "web-admin"), record("ff01", "spiffe://trellis.local/ns/shop/sa/db", "db")
	for _, info := range []adminapi.TokenInfo{a, b, other} {
		if err := r.Create(ctx, info); err != nil {
			t.Fatalf("create %s: %v", info.ID, err)
		}
	}
	if err := r.Create(ctx, a); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("create twice: %v, want ErrConflict", err)
	}
	if err := r.Create(ctx, record("Not-Hex", web, "web")); err == nil {
		t.Errorf("create with a bad ID: no error")
	}
	// A ConfigMap that is no record is not listed.
	if _, err := c.Client.CoreV1().ConfigMaps(install.Namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: tokenrecords.NamePrefix + "cafe"}, Data: map[string]string{"x": "y"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	got, version, err := r.Get(ctx, a.ID)
	if err != nil || version == "" || !reflect.DeepEqual(got, a) {
		t.Fatalf("get: %+v %q %v, want %+v", got, version, err, a)
	}
	for _, id := range []string{"cafe", "00", "../x", "AB", ""} {
		if _, _, err := r.Get(ctx, id); !errors.Is(err, adminapi.ErrNotFound) {
			t.Errorf("get %q: %v, want ErrNotFound", id, err)
		}
	}
	all, err := r.List(ctx)
	if err != nil || !reflect.DeepEqual(ids(all), []string{"0a", "0b", "ff01"}) {
		t.Errorf("list: %v %v, want 0a 0b ff01", ids(all), err)
	}
	mine, err := r.ForIdentity(ctx, web)
	if err != nil || !reflect.DeepEqual(ids(mine), []string{"0a", "0b"}) {
		t.Errorf("for %s: %v %v, want 0a 0b", web, ids(mine), err)
	}
	if none, err := r.ForIdentity(ctx, "spiffe://trellis.local/ns/shop/sa/nobody"); err != nil || len(none) != 0 {
		t.Errorf("for nobody: %v %v", ids(none), err)
	}

	// The ConfigMap: labelled, holding the record's JSON only.
	cm, err := c.Client.CoreV1().ConfigMaps(install.Namespace).Get(ctx, tokenrecords.NamePrefix+a.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels[tokenrecords.LabelManagedBy] != "trellis" || cm.Labels[tokenrecords.LabelJoinToken] != "true" || len(cm.Data) != 1 || cm.Data[tokenrecords.DataKey] == "" {
		t.Errorf("configmap: labels %v data %v", cm.Labels, cm.Data)
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
	if err := r.Update(ctx, record("abcd", web, "web"), version); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("update a missing record: %v, want ErrNotFound", err)
	}
	if got, _, err := r.Get(ctx, a.ID); err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(at) {
		t.Errorf("after update: %+v %v", got, err)
	}

	// Two replicas revoking at once from the same read: one wins.
	for round := range 5 {
		info, version, err := r.Get(ctx, other.ID)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				at := time.Now().UTC().Add(time.Duration(i) * time.Second)
				next := info
				next.RevokedAt = &at
				errs[i] = tokenrecords.New(client, install.Namespace).Update(ctx, next, version)
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
