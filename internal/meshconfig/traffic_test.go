package meshconfig

import (
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/testutil"
)

// A service's own TrafficPolicy wins over its namespace's default; a
// service of another namespace gets neither.
func TestCompileTraffic(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.test")
	tp := func(name, sel string) []byte {
		return []byte(`{"apiVersion":"trellis.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"` + name + `","namespace":"shop"},"spec":{` + sel +
			`"timeout":"2s","retries":{"attempts":3,"on":["5xx","unavailable"]},"outlierDetection":{"consecutive5xx":5}}}`)
	}
	snap, err := Compile(&pb.Snapshot{Version: "1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"}, TrustBundle: [][]byte{ca.Roots()[0].Raw},
		Services:        []*pb.Service{{Name: "catalog", Namespace: "shop"}, {Name: "payments", Namespace: "shop"}, {Name: "catalog", Namespace: "ops"}},
		TrafficPolicies: [][]byte{tp("catalog", `"selector":{"service":"catalog"},`), tp("default", "")}})
	if err != nil {
		t.Fatal(err)
	}
	cat, pay, ops := snap.Services["catalog.shop"].Traffic, snap.Services["payments.shop"].Traffic, snap.Services["catalog.ops"].Traffic
	if cat == nil || cat.Ref != "shop/catalog" || pay == nil || pay.Ref != "shop/default" || ops != nil {
		t.Fatalf("policies: catalog %+v, payments %+v, ops %+v", cat, pay, ops)
	}
	if cat.Timeout != 2*time.Second || cat.Retry.Attempts != 3 || cat.Retry.On != Retry5xx|RetryUnavailable || cat.Retry.BudgetRatio != 0.2 ||
		cat.Outlier.Consecutive5xx != 5 || cat.Outlier.BaseEjectionTime != 30*time.Second || cat.LB != "peak-ewma" {
		t.Errorf("compiled: %+v %+v %+v", cat, cat.Retry, cat.Outlier)
	}
}
