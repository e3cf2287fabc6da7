package dataplane_test

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// BenchmarkThroughProxiesWithTrafficPolicy is BenchmarkThroughProxies
// with a timeout, a per-try timeout and retries: what the policy costs
// a request that needs no retry.
func BenchmarkThroughProxiesWithTrafficPolicy(b *testing.B) {
	benchThrough(b, trafficMesh(b, false))
}

// BenchmarkThroughProxiesWithTrafficPolicyAndRoute adds a canary Route to
// BenchmarkThroughProxiesWithTrafficPolicy: a header-matched rule the
// request does not match, then a weighted rule back to the service.
func BenchmarkThroughProxiesWithTrafficPolicyAndRoute(b *testing.B) {
	benchThrough(b, trafficMesh(b, true))
}

// trafficMesh is the benchmarks' mesh with a TrafficPolicy on catalog,
// and with withRoute a canary Route.
func trafficMesh(b *testing.B, withRoute bool) *mesh {
	m := newMesh(b, meshOptions{app: benchApp()})
	tp := &meshconfig.TrafficPolicy{Ref: "shop/catalog", Timeout: 5 * time.Second, Retry: &meshconfig.RetryPolicy{
		Attempts: 2, PerTryTimeout: time.Second, On: meshconfig.Retry5xx | meshconfig.RetryReset, BudgetRatio: 0.2, BudgetMinPerSecond: 10,
	}}
	snap := *m.snap.get()
	svc := *m.svc
	svc.Traffic = tp
	snap.Services = map[string]*meshconfig.Service{svc.Key(): &svc}
	if withRoute {
		w := 100
		spec := &resource.RouteSpec{Service: svc.Name, Rules: []resource.RouteRule{
			{Matches: []resource.RouteMatch{{Headers: map[string]string{"x-canary": "1"}}}, Backends: []resource.RouteBackend{{Service: "catalog-v2", Weight: &w}}},
			{Backends: []resource.RouteBackend{{Service: svc.Name, Weight: &w}}},
		}}
		snap.Routes = map[string]*meshconfig.Route{svc.Key(): meshconfig.RouteOf(svc.Namespace+"/canary", svc.Namespace, spec)}
	}
	m.snap.set(&snap)
	return m
}
