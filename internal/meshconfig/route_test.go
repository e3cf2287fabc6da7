package meshconfig

import (
	"net/http"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/testutil"
)

// The Route compiled: rules in order, weighted choice within
// bounds, nothing allocated per request.
func TestCompileRoutes(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.test")
	route := []byte(`{"apiVersion":"trellis.dev/v1alpha1","kind":"Route","metadata":{"name":"catalog-canary","namespace":"shop"},"spec":{"service":"catalog","rules":[
 {"matches":[{"path":{"prefix":"/items"},"headers":{"x-canary":"1"}}],"backends":[{"service":"catalog-v2","weight":100}]},
 {"matches":[{"grpc":{"service":"shop.Catalog"}}],"fault":{"abort":{"grpcStatus":14,"percent":100}}},
 {"backends":[{"service":"catalog","weight":90},{"service":"catalog-v2","weight":10}],"mirror":{"service":"catalog-shadow","percent":100},
  "fault":{"delay":{"fixed":"100ms","percent":5},"abort":{"status":503,"percent":1}}}]}}`)
	snap, err := Compile(&pb.Snapshot{Version: "1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"}, TrustBundle: [][]byte{ca.Roots()[0].Raw},
		Services: []*pb.Service{{Name: "catalog", Namespace: "shop"}}, Routes: [][]byte{route}})
	if err != nil {
		t.Fatal(err)
	}
	r := snap.Routes["catalog.shop"]
	if r == nil || r.Ref != "shop/catalog-canary" || len(r.Rules) != 3 {
		t.Fatalf("routes: %+v", snap.Routes)
	}
	if got, want := snap.RouteServices(), []string{"catalog-shadow.shop", "catalog-v2.shop", "catalog.shop"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("RouteServices: got %v, want %v", got, want)
	}
	canary := http.Header{"X-Canary": {"1"}}
	for _, tc := range []struct {
		method, path string
		h            http.Header
		rule         int
	}{
		{"GET", "/items", canary, 0},
		{"GET", "/items/7?x=1", canary, 0},
		{"GET", "/itemsx", canary, 2},
		{"GET", "/items", http.Header{}, 2},
		{"POST", "/shop.Catalog/List", http.Header{}, 1},
		{"POST", "/shop.Other/List", http.Header{}, 2},
	} {
		if got := r.Match(tc.method, tc.path, tc.h); got == nil || got.Index != tc.rule {
			t.Errorf("%s %s %v: got rule %+v, want %d", tc.method, tc.path, tc.h, got, tc.rule)
		}
	}
	split := r.Rules[2]
	n, v2 := 100000, 0
	for range n {
		if split.Pick() == "catalog-v2.shop" {
			v2++
		}
	}
	if pct := float64(v2) * 100 / float64(n); pct < 9.5 || pct > 10.5 {
		t.Errorf("catalog-v2 got %.2f%% of %d picks, want 10%%", pct, n)
	}
	if a := testing.AllocsPerRun(1000, func() {
		rule := r.Match("GET", "/items/1", canary)
		_ = rule.Pick()
		_ = split.Pick()
		_ = split.Mirror.Mirrors()
		_ = split.Abort.Aborts()
		_ = split.Delay.Delays()
	}); a != 0 {
		t.Errorf("match and choose: %v allocations, want 0", a)
	}
}
