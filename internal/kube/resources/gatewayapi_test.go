package resources_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/kube/gatewayapi"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// An HTTPRoute with a Service parent and a 90/10 split, created through
// the API server with the Gateway API's own CRDs, becomes a Trellis Route
// of the source, and its status.parents says Accepted=True; an unsupported
// filter gives Accepted=False (UnsupportedValue) and makes no Route; a
// missing backend Service gives ResolvedRefs=False (BackendNotFound) until
// it is created; a GRPCRoute is converted too.
func TestGatewayAPIRoutesOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.InstallGatewayAPICRDs(t)
	c.Namespace(t, "shop", nil)
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"catalog", "catalog-v1", "catalog-v2"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
		}
		if _, err := client.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	served, err := resources.GatewayAPIServed(client.Discovery())
	if err != nil || !served {
		t.Fatalf("GatewayAPIServed = %v, %v; want true", served, err)
	}
	dyn := c.Dynamic(t)
	httpRoutes := dyn.Resource(resources.HTTPRoutes).Namespace("shop")
	create := func(doc string) {
		t.Helper()
		if _, err := dyn.Resource(resources.HTTPRoutes).Namespace("shop").Create(ctx, kubetest.Object(t, doc), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog}]
  rules:
  - backendRefs:
    - {name: catalog-v1, port: 8080, weight: 90}
    - {name: catalog-v2, port: 8080, weight: 10}
`)

	src := resources.New(dyn, testutil.Logger(t))
	src.WatchGatewayAPI()
	if err := src.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	routes := func() map[string]resource.RouteSpec {
		objs, _ := src.Accepted()
		out := map[string]resource.RouteSpec{}
		for _, o := range objs {
			if o.Kind != resource.KindRoute {
				continue
			}
			var s resource.RouteSpec
			if err := json.Unmarshal(o.Spec, &s); err != nil {
				t.Fatal(err)
			}
			out[o.Metadata.Namespace+"/"+o.Metadata.Name] = s
		}
		return out
	}
	got := routes()["shop/httproute.canary.catalog"]
	if got.Service != "catalog" || len(got.Rules) != 1 || len(got.Rules[0].Backends) != 2 ||
		got.Rules[0].Backends[0].Service != "catalog-v1" || got.Rules[0].Backends[0].WeightOf() != 90 ||
		got.Rules[0].Backends[1].Service != "catalog-v2" || got.Rules[0].Backends[1].WeightOf() != 10 {
		t.Fatalf("routes at start: %+v, want shop/httproute.canary.catalog splitting catalog 90/10 to catalog-v1 and catalog-v2", routes())
	}
	condition := func(name, typ string) (cond metav1.Condition, gen int64) {
		u, err := httpRoutes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var hr gwapiv1.HTTPRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &hr); err != nil {
			t.Fatal(err)
		}
		for _, p := range hr.Status.Parents {
			if p.ControllerName != gatewayapi.ControllerName {
				continue
			}
			for _, c := range p.Conditions {
				if c.Type == typ {
					return c, hr.Generation
				}
			}
		}
		return metav1.Condition{}, hr.Generation
	}
	status := func(name string) (metav1.Condition, int64) { return condition(name, gatewayapi.ConditionAccepted) }
	testutil.Eventually(t, "canary Accepted=True in status.parents", func() bool {
		a, gen := status("canary")
		return a.Status == metav1.ConditionTrue && a.Reason == gatewayapi.ReasonAccepted && a.ObservedGeneration == gen
	})

	// An unsupported filter: Accepted=False with the reason, and the
	// route's Route leaves the mesh.
	create(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog-v2}]
  rules:
  - filters: [{type: URLRewrite, urlRewrite: {hostname: catalog.example}}]
    backendRefs: [{name: catalog-v1, port: 8080}]
`)
	testutil.Eventually(t, "rewrite Accepted=False UnsupportedValue", func() bool {
		a, _ := status("rewrite")
		return a.Status == metav1.ConditionFalse && a.Reason == gatewayapi.ReasonUnsupportedValue && strings.Contains(a.Message, "URLRewrite")
	})
	if _, ok := routes()["shop/httproute.rewrite.catalog-v2"]; ok {
		t.Error("the refused HTTPRoute made a Route")
	}

	// A backend Service missing: ResolvedRefs=False until it is created.
	create(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: early, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog-v1}]
  rules:
  - backendRefs: [{name: catalog-v3, port: 8080}]
`)
	testutil.Eventually(t, "early ResolvedRefs=False BackendNotFound", func() bool {
		r, _ := condition("early", gatewayapi.ConditionResolvedRefs)
		a, _ := status("early")
		return r.Status == metav1.ConditionFalse && r.Reason == gatewayapi.ReasonBackendNotFound && a.Status == metav1.ConditionTrue
	})
	if _, err := client.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "catalog-v3", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "early ResolvedRefs=True once catalog-v3 exists", func() bool {
		r, _ := condition("early", gatewayapi.ConditionResolvedRefs)
		e := routes()["shop/httproute.early.catalog-v1"]
		return r.Status == metav1.ConditionTrue && len(e.Rules) == 1 && len(e.Rules[0].Backends) == 1 && e.Rules[0].Fault == nil
	})

	// A GRPCRoute; then deleting the HTTPRoute takes its Route away.
	if _, err := dyn.Resource(resources.GRPCRoutes).Namespace("shop").Create(ctx, kubetest.Object(t, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: reindex, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog-v1}]
  rules:
  - matches: [{method: {service: shop.Catalog, method: Reindex}}]
    backendRefs: [{name: catalog-v2, port: 8080}]
`), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := httpRoutes.Delete(ctx, "canary", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the GRPCRoute's Route in, the deleted HTTPRoute's out", func() bool {
		rs := routes()
		g, ok := rs["shop/grpcroute.reindex.catalog-v1"]
		_, canary := rs["shop/httproute.canary.catalog"]
		return ok && !canary && len(g.Rules) == 1 && len(g.Rules[0].Matches) == 1 && g.Rules[0].Matches[0].GRPC != nil &&
			g.Rules[0].Matches[0].GRPC.Method == "Reindex"
	})
}
