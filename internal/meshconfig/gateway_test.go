package meshconfig

import (
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestGatewayTableMatch(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.test")
	bundle := [][]byte{ca.Roots()[0].Raw}
	routes := [][]byte{
		[]byte(`{"apiVersion":"trellis.dev/v1alpha1","kind":"GatewayRoute","metadata":{"name":"shop","namespace":"shop"},"spec":{"hosts":["shop.example.com","*.example.com"],"rules":[{"match":{"pathPrefix":"/api"},"service":"frontend"},{"service":"web","rateLimit":{"requestsPerSecond":5}}]}}`),
		[]byte(`{"apiVersion":"trellis.dev/v1alpha1","kind":"GatewayRoute","metadata":{"name":"admin","namespace":"ops"},"spec":{"hosts":["*.admin.example.com"],"rules":[{"match":{"pathPrefix":"/"},"service":"console"}]}}`),
	}
	snap, err := Compile(&pb.Snapshot{Version: "1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"}, TrustBundle: bundle, GatewayRoutes: routes})
	if err != nil {
		t.Fatal(err)
	}
	gt := snap.Gateway
	if gt.Len() != 3 {
		t.Fatalf("hosts = %d, want 3", gt.Len())
	}
	for _, tc := range []struct{ host, path, want string }{
		{"shop.example.com", "/api", "frontend.shop"},
		{"SHOP.example.com:8443", "/api/items", "frontend.shop"},
		{"shop.example.com.", "/apis", "web.shop"},
		{"shop.example.com", "/", "web.shop"},
		{"m.example.com", "/api/x", "frontend.shop"},
		{"x.admin.example.com", "/api", "console.ops"},
		{"admin.example.com", "/api", "frontend.shop"},
		{"example.com", "/", ""},
		{"other.test", "/", ""},
	} {
		r := gt.Match(tc.host, tc.path)
		got := ""
		if r != nil {
			got = r.Service
		}
		if got != tc.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
	web := gt.Match("shop.example.com", "/")
	if web.Limiter == nil || web.PerCaller || web.Ref != "GatewayRoute shop/shop rule 1" {
		t.Errorf("rule 1: %+v", web)
	}
	// An unchanged route keeps its bucket across snapshots.
	again, err := Compile(&pb.Snapshot{Version: "2", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"}, TrustBundle: bundle, GatewayRoutes: routes})
	if err != nil {
		t.Fatal(err)
	}
	if again.Gateway.Match("shop.example.com", "/").Limiter != web.Limiter {
		t.Error("the rule's limiter was not kept across snapshots")
	}
	if n := testing.AllocsPerRun(100, func() { gt.Match("shop.example.com:443", "/api/items") }); n != 0 {
		t.Errorf("Match allocates %v times per call", n)
	}
}
