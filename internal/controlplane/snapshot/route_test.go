package snapshot_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

func testRoute(t *testing.T, ns, name, spec string) snapshot.Policy {
	t.Helper()
	objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: Route\nmetadata: {name: "+name+", namespace: "+ns+"}\nspec: "+spec+"\n"), "r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := snapshot.RouteFromObject(&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A Route reaches the proxies whose config holds its service, compiled;
// one for a service they do not call does not.
func TestRouteSelection(t *testing.T) {
	in := testInput(t, testRoots(t))
	in.Routes = []snapshot.Policy{
		testRoute(t, "shop", "catalog-canary", `{service: catalog, rules: [{backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}]}]}`),
		testRoute(t, "shop", "nowhere", `{service: nowhere, rules: [{backends: [{service: catalog}]}]}`),
	}
	v, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	w := in.Workloads[1]
	s, err := snapshot.Build(v, &w)
	if err != nil {
		t.Fatal(err)
	}
	c, err := meshconfig.Compile(withVersion(s))
	if err != nil {
		t.Fatalf("%s: snapshot does not compile: %v", w.Instance, err)
	}
	var got []string
	for k, r := range c.Routes {
		got = append(got, k+"="+r.Ref)
	}
	slices.Sort(got)
	if want := []string{"catalog.shop=shop/catalog-canary"}; !slices.Equal(got, want) {
		t.Errorf("%s: routes %v, want %v", w.Instance, got, want)
	}
	if got, want := c.RouteServices(), []string{"catalog-v2.shop", "catalog.shop"}; !slices.Equal(got, want) {
		t.Errorf("RouteServices: %v, want %v", got, want)
	}
}

// A Route made of a Gateway API route reaches the proxies with what they
// merge it by: its kind, the route it was made of and that route's age;
// a Trellis Route with labels and annotations reaches them without.
func TestRouteFromGatewayAPIKeepsMergeMetadata(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindRoute,
		Metadata: resource.Metadata{Name: "httproute.items.catalog", Namespace: "shop", CreationTimestamp: &created,
			Labels:      map[string]string{meshconfig.LabelGatewayAPIKind: meshconfig.KindHTTPRoute, "team": "a"},
			Annotations: map[string]string{meshconfig.AnnotationFrom: "HTTPRoute shop/items", "note": "x"}},
		Spec: []byte(`{"service":"catalog","rules":[{"backends":[{"service":"catalog-v2"}]}],"unmatched":{"status":404}}`)}
	p, err := snapshot.RouteFromObject(&o)
	if err != nil {
		t.Fatal(err)
	}
	var got resource.Object
	if err := json.Unmarshal(p.JSON, &got); err != nil {
		t.Fatal(err)
	}
	in, err := meshconfig.RouteInputOf(&got)
	if err != nil {
		t.Fatal(err)
	}
	if in.GatewayAPIKind != meshconfig.KindHTTPRoute || in.Origin != "shop/items" || !in.Created.Equal(created) || in.Spec.Unmatched == nil || in.Spec.Unmatched.Status != 404 {
		t.Errorf("got %+v, want an HTTPRoute's Route of shop/items created %s answering 404", in, created)
	}
	if got.Metadata.Labels["team"] != "" || got.Metadata.Annotations["note"] != "" {
		t.Errorf("metadata %+v: want only the merge keys", got.Metadata)
	}
	native := testRoute(t, "shop", "canary", `{service: catalog, rules: [{backends: [{service: catalog-v2}]}]}`)
	if strings.Contains(string(native.JSON), "labels") || strings.Contains(string(native.JSON), "creationTimestamp") {
		t.Errorf("a Trellis Route's JSON: %s, want no labels or timestamps", native.JSON)
	}
}
