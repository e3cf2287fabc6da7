package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// A control plane whose resources are the custom resources of a real API
// server: an AuthorizationPolicy created, changed and broken with the
// Kubernetes API reaches the proxies (the broken one keeps its last
// accepted version), and the admin API refuses writes with a pointer to
// kubectl.
func TestPoliciesFromCustomResources(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.Namespace(t, "shop", nil)
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	src := resources.New(c.Dynamic(t), testutil.Logger(t))
	if err := src.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, controlplane.Config{Resources: src})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	up := proxy.Upstream{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}
	frontend := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{up}})
	hc := &http.Client{Timeout: 5 * time.Second}
	fe := frontend.UpstreamAddr(0)

	expect(t, hc, fe, "GET", "/items", answer{code: 403, body: denied})
	u := kubetest.Object(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET], paths: ["/items"]}]
`)
	if _, err := policies.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, hc, fe, "GET", "/items", answer{code: 200, body: "ok"})
	expect(t, hc, fe, "POST", "/items", answer{code: 403, body: denied})

	// Changed to allow POST too.
	update := func(f func(*unstructured.Unstructured)) {
		t.Helper()
		testutil.Eventually(t, "the update stored", func() bool {
			cur, err := policies.Get(ctx, "frontend-reads", metav1.GetOptions{})
			if err != nil {
				return false
			}
			f(cur)
			_, err = policies.Update(ctx, cur, metav1.UpdateOptions{})
			return err == nil
		})
	}
	update(func(cur *unstructured.Unstructured) {
		rules, _, _ := unstructured.NestedSlice(cur.Object, "spec", "rules")
		to := rules[0].(map[string]any)["to"].([]any)
		to[0].(map[string]any)["methods"] = []any{"GET", "POST"}
		_ = unstructured.SetNestedSlice(cur.Object, rules, "spec", "rules")
	})
	expect(t, hc, fe, "POST", "/items", answer{code: 200, body: "ok"})

	// Broken (the webhook bypassed): the proxies keep the last accepted
	// version, 200 for 100 calls while the status says why.
	update(func(cur *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(cur.Object, "SOMETIMES", "spec", "action")
	})
	testutil.Eventually(t, "Accepted=False", func() bool {
		cur, err := policies.Get(ctx, "frontend-reads", metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
		return len(conds) == 1 && conds[0].(map[string]any)["status"] == "False"
	})
	for range 100 {
		if got := call(t, hc, fe, "POST", "/items"); got.code != 200 {
			t.Fatalf("POST /items with the policy broken: %d, want 200 from its last accepted version", got.code)
		}
	}

	// The admin API's writes go through to the custom resources.
	objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: shop}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client(t).Apply(ctx, objs, false); err != nil {
		t.Fatalf("admin apply in Kubernetes mode: %v", err)
	}
	if _, err := policies.Get(ctx, "x", metav1.GetOptions{}); err != nil {
		t.Errorf("the policy applied through the admin API is no custom resource: %v", err)
	}
}
