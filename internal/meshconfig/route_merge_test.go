package meshconfig

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Routes made of Gateway API routes merge per service in the Gateway
// API's precedence; a Trellis Route applies alone.
func TestMergeGatewayAPIRoutes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	prefix := func(p string) resource.RouteMatch { return resource.RouteMatch{Path: &resource.PathMatch{Prefix: p}} }
	exact := func(p string) resource.RouteMatch { return resource.RouteMatch{Path: &resource.PathMatch{Exact: p}} }
	grpc := func(svc, m string) resource.RouteMatch {
		return resource.RouteMatch{GRPC: &resource.GRPCMatch{Service: svc, Method: m}}
	}
	rule := func(to string, ms ...resource.RouteMatch) resource.RouteRule {
		return resource.RouteRule{Matches: ms, Backends: []resource.RouteBackend{{Service: to}}}
	}
	in := func(kind, name string, created time.Time, rules ...resource.RouteRule) RouteInput {
		ref := "shop/" + name
		origin := ref
		if kind != "" {
			origin = "shop/" + name[len("httproute."):len(name)-len(".catalog")]
		}
		spec := resource.RouteSpec{Service: "catalog", Rules: rules}
		if kind != "" {
			spec.Unmatched = &resource.RouteUnmatched{Status: http.StatusNotFound}
		}
		return RouteInput{Ref: ref, Namespace: "shop", GatewayAPIKind: kind, Created: created, Origin: origin, Spec: spec}
	}
	for _, tc := range []struct {
		name string
		ins  []RouteInput
		// order is the merged rules as "ref#index"; shadowed the
		// Routes not applied; unmatched the status of the unmatched
		// answer (0: the service itself).
		order, shadowed []string
		unmatched       int
	}{
		{
			name: "precedence first, then the older route",
			ins: []RouteInput{
				in(KindHTTPRoute, "httproute.a.catalog", t1, rule("items", prefix("/items")), rule("all", resource.RouteMatch{Headers: map[string]string{"x-all": "1"}})),
				in(KindHTTPRoute, "httproute.b.catalog", t0, rule("cart", prefix("/items")), rule("x", exact("/items/x")),
					rule("long", prefix("/items/long")), resource.RouteRule{Matches: []resource.RouteMatch{{Method: "GET"}}}),
			},
			order:     []string{"shop/httproute.b.catalog#1", "shop/httproute.b.catalog#2", "shop/httproute.b.catalog#0", "shop/httproute.a.catalog#0", "shop/httproute.b.catalog#3", "shop/httproute.a.catalog#1"},
			unmatched: 404,
		},
		{
			name: "same age: by the Gateway API route's namespace/name, not the Route's",
			ins: []RouteInput{
				in(KindHTTPRoute, "httproute.a-b.catalog", t0, rule("ab", prefix("/items"))),
				in(KindHTTPRoute, "httproute.a.catalog", t0, rule("a", prefix("/items"))),
			},
			order:     []string{"shop/httproute.a.catalog#0", "shop/httproute.a-b.catalog#0"},
			unmatched: 404,
		},
		{
			name: "several matches of one rule each find their place",
			ins: []RouteInput{
				in(KindHTTPRoute, "httproute.a.catalog", t0, rule("a", prefix("/a"), exact("/a/b"))),
				in(KindHTTPRoute, "httproute.b.catalog", t1, rule("b", prefix("/a/b/c"))),
			},
			order:     []string{"shop/httproute.a.catalog#0", "shop/httproute.b.catalog#0", "shop/httproute.a.catalog#0"},
			unmatched: 404,
		},
		{
			name: "GRPCRoutes and HTTPRoutes on one service: the GRPCRoutes apply",
			ins: []RouteInput{
				in(KindHTTPRoute, "httproute.a.catalog", t0, rule("items", prefix("/items"))),
				in(KindGRPCRoute, "httproute.g.catalog", t1, rule("svc", grpc("shop.Catalog", ""))),
				in(KindGRPCRoute, "httproute.h.catalog", t1, rule("method", grpc("shop.Catalog", "List"))),
			},
			order:     []string{"shop/httproute.h.catalog#0", "shop/httproute.g.catalog#0"},
			shadowed:  []string{"shop/httproute.a.catalog"},
			unmatched: 404,
		},
		{
			name: "a Trellis Route applies alone",
			ins: []RouteInput{
				in(KindHTTPRoute, "httproute.a.catalog", t0, rule("items", exact("/items"))),
				in("", "zz-native", time.Time{}, rule("n1", prefix("/items")), rule("n2")),
				in("", "native", time.Time{}, rule("n", prefix("/items"))),
			},
			order:    []string{"shop/native#0"},
			shadowed: []string{"shop/httproute.a.catalog", "shop/zz-native"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			routes := CompileRoutes(tc.ins)
			r := routes["catalog.shop"]
			if len(routes) != 1 || r == nil {
				t.Fatalf("routes: %v", routes)
			}
			var order []string
			for _, rule := range r.Rules {
				order = append(order, fmt.Sprintf("%s#%d", rule.Ref, rule.Index))
			}
			if !slices.Equal(order, tc.order) {
				t.Errorf("rules: got %v, want %v", order, tc.order)
			}
			if !slices.Equal(r.Shadowed, tc.shadowed) {
				t.Errorf("shadowed: got %v, want %v", r.Shadowed, tc.shadowed)
			}
			got := r.Match("DELETE", "/nothing/here", http.Header{})
			switch {
			case tc.unmatched == 0 && got != nil && got.Index < 0:
				t.Errorf("unmatched: got an answer %+v, want the service itself", got.Abort)
			case tc.unmatched != 0 && (got == nil || got.Index != -1 || got.Abort.Status != tc.unmatched || got.Abort.GRPCCode() != 12 || !got.Abort.Aborts()):
				t.Errorf("unmatched: got %+v, want an answer %d (gRPC 12)", got, tc.unmatched)
			}
		})
	}

	// A merged Route still matches without allocating, the unmatched
	// answer included.
	r := CompileRoutes([]RouteInput{
		in(KindHTTPRoute, "httproute.a.catalog", t0, rule("items", prefix("/items"))),
		in(KindHTTPRoute, "httproute.b.catalog", t0, rule("cart", prefix("/cart"))),
	})["catalog.shop"]
	h := http.Header{}
	if a := testing.AllocsPerRun(1000, func() {
		_ = r.Match("GET", "/cart/1", h).Pick()
		_ = r.Match("GET", "/other", h).Abort.Aborts()
	}); a != 0 {
		t.Errorf("match on a merged Route: %v allocations, want 0", a)
	}
}
