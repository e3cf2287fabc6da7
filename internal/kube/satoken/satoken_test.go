package satoken_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/kube/satoken"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Real projected tokens from the TokenRequest API, reviewed by a real API
// server: a pod-bound token for the mesh's audience is accepted, and each
// way a token can be wrong is refused, saying why.
func TestReviewOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("trellis.test")
	r := &satoken.Reviewer{Client: c.Client, TrustDomain: td}
	core := c.Client.CoreV1()
	c.Namespace(t, "shop", nil)
	for _, sa := range []string{"frontend", "catalog"} {
		if _, err := core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	newPod := func(name, sa string) {
		t.Helper()
		_, err := core.Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	newPod("frontend-1", "frontend")
	newPod("frontend-2", "frontend")
	newPod("catalog-1", "catalog")
	token := func(sa, pod string, audiences ...string) string {
		t.Helper()
		tok, err := c.Token(ctx, "shop", sa, pod, time.Hour, audiences...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	good := token("frontend", "frontend-1", satoken.DefaultAudience)
	id, err := r.Review(ctx, good)
	if err != nil {
		t.Fatalf("a pod-bound token for the mesh's audience: %v", err)
	}
	if id.ID.String() != "spiffe://trellis.test/ns/shop/sa/frontend" || id.PodName != "frontend-1" || id.PodUID == "" {
		t.Errorf("identity %+v", id)
	}

	refusals := []struct {
		name, token, why string
	}{
		{"empty", "", "no token"},
		{"garbage", "not.a.token", "does not authenticate"},
		{"wrong audience", token("frontend", "frontend-1", "vault"), "does not authenticate"},
		{"not bound to a pod", token("frontend", "", satoken.DefaultAudience), "not bound to a pod"},
	}
	for _, tc := range refusals {
		_, err := r.Review(ctx, tc.token)
		if !errors.Is(err, satoken.ErrRefused) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.why)
		}
		if tc.token != "" && err != nil && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the refusal quotes the token", tc.name)
		}
	}

	// A deleted pod counts at once (the reviewer reads the pod too, in case
	// the API server still accepts the token from its cache).
	bound2 := token("frontend", "frontend-2", satoken.DefaultAudience)
	if err := core.Pods("shop").Delete(ctx, "frontend-2", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Review(ctx, bound2); !errors.Is(err, satoken.ErrRefused) {
		t.Errorf("token of a deleted pod: %v", err)
	}

	// A deleted ServiceAccount too, and one made again under the same name
	// is another account.
	cat := token("catalog", "catalog-1", satoken.DefaultAudience)
	if _, err := r.Review(ctx, cat); err != nil {
		t.Fatalf("catalog's token before the delete: %v", err)
	}
	if err := core.ServiceAccounts("shop").Delete(ctx, "catalog", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Review(ctx, cat); !errors.Is(err, satoken.ErrRefused) {
		t.Errorf("token of a deleted service account: %v", err)
	}
	if _, err := core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "catalog"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Review(ctx, cat); !errors.Is(err, satoken.ErrRefused) {
		t.Errorf("token of a service account deleted and made again: %v", err)
	}
}
