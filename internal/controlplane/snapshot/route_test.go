package snapshot_test

import (
	"slices"
	"testing"

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
