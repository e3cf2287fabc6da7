package dataplane_test

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// BenchmarkThroughProxiesWithTrafficPolicy is BenchmarkThroughProxies
// with a timeout, a per-try timeout and retries: what the policy costs
// a request that needs no retry.
func BenchmarkThroughProxiesWithTrafficPolicy(b *testing.B) {
	m := newMesh(b, meshOptions{app: benchApp()})
	tp := &meshconfig.TrafficPolicy{Ref: "shop/catalog", Timeout: 5 * time.Second, Retry: &meshconfig.RetryPolicy{
		Attempts: 2, PerTryTimeout: time.Second, On: meshconfig.Retry5xx | meshconfig.RetryReset, BudgetRatio: 0.2, BudgetMinPerSecond: 10,
	}}
	snap := *m.snap.get()
	svc := *m.svc
	svc.Traffic = tp
	snap.Services = map[string]*meshconfig.Service{svc.Key(): &svc}
	m.snap.set(&snap)
	c := benchClient(b)
	req := benchRequest(b, m.url("/bench"))
	benchGet(b, c, req)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		benchGet(b, c, req)
	}
	cpu.report(b)
}
