package dataplane

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

func testEndpoints(n int) []*PeerEndpoint {
	eps := make([]*PeerEndpoint, n)
	for i := range eps {
		eps[i] = &PeerEndpoint{addr: "10.0.0." + strconv.Itoa(i+1) + ":15006"}
	}
	return eps
}

func testRoute(lb string, eps []*PeerEndpoint) *route {
	tp := &meshconfig.TrafficPolicy{Ref: "shop/catalog", LB: lb, HashHeader: "x-user",
		Outlier: &meshconfig.OutlierPolicy{Consecutive5xx: 5, BaseEjectionTime: time.Second, MaxEjectionTime: time.Minute, MaxEjectedPercent: 50}}
	if lb != resource.LBConsistentHash {
		tp.HashHeader = ""
	}
	svc := &meshconfig.Service{Name: "catalog", Namespace: "shop", Traffic: tp}
	rt := &route{o: NewOutbound(DataPlaneConfig{}), key: "catalog.shop", svc: svc, eps: eps, bal: NewPolicyBalancer(svc, eps)}
	if kb, ok := rt.bal.(KeyedBalancer); ok {
		rt.keyed, rt.hashHeader = kb, "X-User"
	}
	return rt
}

// Picking and observing cost no allocation, with every balancer.
func TestBalancerPickAllocs(t *testing.T) {
	req := &h1.Head{Fields: []h1.Field{{Name: "X-User", Value: "alice"}}}
	for _, lb := range []string{resource.LBPeakEWMA, resource.LBRoundRobin, resource.LBConsistentHash} {
		rt := testRoute(lb, testEndpoints(5))
		start := time.Now()
		allocs := testing.AllocsPerRun(1000, func() {
			e := rt.pickH1(req)
			e.inflight.Add(1)
			rt.observe(e, http.StatusOK, nil, start)
			e.inflight.Add(-1)
			_ = rt.bal.Pick(e)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per pick and observe, want 0", lb, allocs)
		}
	}
}

// Peak-EWMA: a peak replaces the estimate at once; lower samples pull it
// down over the decay time; an idle estimate decays.
func TestLatencyEWMA(t *testing.T) {
	var l latencyEWMA
	now := time.Now().UnixNano()
	l.observe(100*time.Millisecond, now)
	if got := l.estimate(now); got != float64(100*time.Millisecond) {
		t.Errorf("after a peak: %v, want 100ms", time.Duration(got))
	}
	l.observe(time.Millisecond, now+int64(time.Millisecond))
	if got := time.Duration(l.estimate(now + int64(time.Millisecond))); got < 99*time.Millisecond {
		t.Errorf("a fast sample 1ms later: %v, want still about 100ms", got)
	}
	if got := time.Duration(l.estimate(now + int64(ewmaDecay))); got > 37*time.Millisecond || got < 36*time.Millisecond {
		t.Errorf("after one decay time idle: %v, want 100ms/e", got)
	}
}

// The breaker admits MaxConnections at once, queues MaxPendingRequests.
func TestBreakerBounds(t *testing.T) {
	b := newBreaker("catalog.shop", &meshconfig.TrafficPolicy{Ref: "shop/catalog", MaxConnections: 2, MaxPendingRequests: 1})
	for i := range 2 {
		if got := b.acquire(nil); got != "" {
			t.Fatalf("acquire %d: %q, want admitted", i, got)
		}
	}
	if got := b.tryAcquire(); got != limitConnections {
		t.Errorf("tryAcquire when full: %q, want %q", got, limitConnections)
	}
	waited := make(chan string)
	go func() { waited <- b.acquire(nil) }()
	for b.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if got := b.acquire(nil); got != limitPending {
		t.Errorf("acquire past the queue: %q, want %q", got, limitPending)
	}
	b.release()
	if got := <-waited; got != "" {
		t.Errorf("queued acquire: %q, want admitted after a release", got)
	}
}

// Sequential picks from the balancers, for their relative cost.
func BenchmarkBalancerPick(b *testing.B) {
	req := &h1.Head{Fields: []h1.Field{{Name: "X-User", Value: "alice"}}}
	for _, lb := range []string{resource.LBRoundRobin, resource.LBPeakEWMA, resource.LBConsistentHash} {
		b.Run(lb, func(b *testing.B) {
			rt := testRoute(lb, testEndpoints(8))
			start := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				e := rt.pickH1(req)
				rt.observe(e, http.StatusOK, nil, start)
			}
		})
	}
}
