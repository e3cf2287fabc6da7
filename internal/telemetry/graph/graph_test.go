package graph_test

import (
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

// A proxy reporting every 10s: 60 requests, 6 failures, 45 over mTLS and
// 3 denied per report.
func TestRatesOverWindow(t *testing.T) {
	r := newRig(t, graph.Options{})
	for k := range uint64(7) {
		r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 100+60*k), func(e *pb.EdgeStats) {
			e.Failures, e.MtlsRequests, e.Denied = 6*k, 45*k, 3*k
		})))
		r.clk.Advance(10 * time.Second)
	}
	// Now t0+70s; reports at t0 .. t0+60s. Rates divide by the window,
	// whatever span the samples cover.
	tests := []struct {
		window time.Duration
		want   uint64 // requests
	}{
		{time.Minute, 300},      // baseline t0+10s (at the start), latest t0+60s
		{30 * time.Second, 120}, // baseline t0+40s
		{5 * time.Minute, 360},  // nothing before the window, old counters_since: the oldest sample
		{time.Second, 0},        // the latest is older than the window
	}
	for _, tt := range tests {
		g := r.g.Snapshot(tt.window)
		if tt.want == 0 {
			if len(g.Edges) != 0 || g.Proxies != 0 {
				t.Errorf("window %v: got edges %+v, proxies %d; want none", tt.window, g.Edges, g.Proxies)
			}
			continue
		}
		e := findEdge(t, g, "frontend.shop", "catalog.shop")
		if e.Requests != tt.want {
			t.Errorf("window %v: requests got %d, want %d", tt.window, e.Requests, tt.want)
		}
		if want := float64(tt.want) / tt.window.Seconds(); e.RequestRate != want {
			t.Errorf("window %v: rate got %v, want %v", tt.window, e.RequestRate, want)
		}
		// 10% failures and 5% denials: neither is a success.
		if !near(e.SuccessRate, 0.85) || !near(e.DenialRate, 0.05) || !near(e.MTLSShare, 0.75) || e.Denied != tt.want/20 {
			t.Errorf("window %v: success %v, denial rate %v, mtls %v, denied %d; want 0.85, 0.05, 0.75, %d",
				tt.window, val(e.SuccessRate), val(e.DenialRate), val(e.MTLSShare), e.Denied, tt.want/20)
		}
		if e.LatencyP50Ms != nil {
			t.Errorf("window %v: p50 %v without latency counts, want nil", tt.window, *e.LatencyP50Ms)
		}
		if g.Window != tt.window.String() || !g.GeneratedAt.Equal(t0.Add(70*time.Second)) || g.Proxies != 1 {
			t.Errorf("window %v: got window %q, generated %v, proxies %d", tt.window, g.Window, g.GeneratedAt, g.Proxies)
		}
	}
}

func TestNewInstanceCountsFromZero(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", t0.Add(-5*time.Second), edge("frontend.shop", "catalog.shop", 50)))
	if got := findEdge(t, r.g.Snapshot(time.Minute), "frontend.shop", "catalog.shop").Requests; got != 50 {
		t.Errorf("counters_since inside the window: got %d requests, want 50 (from zero)", got)
	}
	// With a window not reaching back to counters_since, the only sample
	// is the baseline.
	if got := r.g.Snapshot(time.Second).Edges; len(got) != 0 {
		t.Errorf("counters_since before a 1s window: got edges %+v, want none", got)
	}
}

func TestOldInstanceSingleSampleContributesNothing(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 50)))
	g := r.g.Snapshot(time.Minute)
	if len(g.Edges) != 0 {
		t.Errorf("edges: got %+v, want none (baseline and latest are one sample)", g.Edges)
	}
	n := findNode(t, g, "catalog.shop")
	if n.Proxies != 1 || n.Requests != 0 || n.SuccessRate != nil || n.MTLSShare != nil || n.LatencyP50Ms != nil {
		t.Errorf("node: got %+v, want 1 proxy, no requests, nil figures", n)
	}
}

// An edge new to an instance counts from the instance's previous report.
func TestNewEdgeOfKnownInstanceCountsFromPreviousReport(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 50)))
	r.clk.Advance(10 * time.Second)
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 50), edge("admin.ops", "catalog.shop", 7)))
	g := r.g.Snapshot(time.Minute)
	if got := findEdge(t, g, "admin.ops", "catalog.shop").Requests; got != 7 {
		t.Errorf("new edge: got %d requests, want 7", got)
	}
	if len(g.Edges) != 1 {
		t.Errorf("edges: got %+v, want only admin.ops -> catalog.shop (no traffic on the other)", g.Edges)
	}
}

func TestCounterReset(t *testing.T) {
	tests := []struct {
		name     string
		requests []uint64 // one report per 10s
		want     uint64
	}{
		{"reset after the baseline", []uint64{1000, 30}, 30},
		// Growth before the reset counts, then the new counters.
		{"reset inside the window", []uint64{1000, 1100, 30, 40}, 140},
		{"no reset", []uint64{1000, 1100, 1150}, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, graph.Options{})
			for _, n := range tt.requests {
				r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", n)))
				r.clk.Advance(10 * time.Second)
			}
			if got := findEdge(t, r.g.Snapshot(time.Minute), "frontend.shop", "catalog.shop").Requests; got != tt.want {
				t.Errorf("requests: got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestReplicasAreSummed(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 100)))
	r.record(t, reporterA, "a2", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 10), func(e *pb.EdgeStats) { e.MtlsRequests = 0 })))
	r.clk.Advance(10 * time.Second)
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 130)))
	r.record(t, reporterA, "a2", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 40), func(e *pb.EdgeStats) {
		e.MtlsRequests, e.Failures = 0, 15
	})))
	g := r.g.Snapshot(time.Minute)
	e := findEdge(t, g, "frontend.shop", "catalog.shop")
	if e.Requests != 60 || !near(e.SuccessRate, 0.75) || !near(e.MTLSShare, 0.5) || e.RequestRate != 1 {
		t.Errorf("edge: got requests %d, rate %v, success %v, mtls %v; want 60, 1, 0.75, 0.5", e.Requests, e.RequestRate, val(e.SuccessRate), val(e.MTLSShare))
	}
	n := findNode(t, g, "catalog.shop")
	if n.Proxies != 2 || n.Requests != 60 || !near(n.SuccessRate, 0.75) {
		t.Errorf("node: got %+v, want 2 proxies and the edge's traffic", n)
	}
	if f := findNode(t, g, "frontend.shop"); f.Proxies != 0 || f.Requests != 0 {
		t.Errorf("source node: got %+v, want 0 proxies, no inbound traffic", f)
	}
	if g.Proxies != 2 {
		t.Errorf("proxies: got %d, want 2", g.Proxies)
	}
}

func TestPercentiles(t *testing.T) {
	tests := []struct {
		name     string
		counts   []uint64 // per bucket: <=10ms, <=100ms, <=1s, +Inf
		p50, p99 float64  // ms
	}{
		// p50: rank 50 ends the first bucket: 0 + 10ms * 50/50.
		// p99: rank 99 falls in +Inf: the highest bound.
		{"tail beyond the bounds", []uint64{50, 30, 15, 5}, 10, 1000},
		// p50: 10 + 90 * (50-10)/60 = 70; p99: 100 + 900 * (99-70)/30 = 970.
		{"inside buckets", []uint64{10, 60, 30, 0}, 70, 970},
		// p50: rank 2, bucket 2 holds 3..4: 100 + 900 * (2-0)/4 = 550.
		{"empty first buckets", []uint64{0, 0, 4, 0}, 550, 100 + 900*3.96/4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, graph.Options{})
			var req uint64
			for _, n := range tt.counts {
				req += n
			}
			r.record(t, reporterA, "a1", stats("catalog.shop", t0, with(edge("frontend.shop", "catalog.shop", req), func(e *pb.EdgeStats) { e.LatencyCounts = tt.counts })))
			// Another replica with other bounds adds requests, not latency.
			other := stats("catalog.shop", t0, with(edge("frontend.shop", "catalog.shop", 1000), func(e *pb.EdgeStats) { e.LatencyCounts = []uint64{1000, 0} }))
			other.LatencyBoundsSeconds = []float64{5}
			r.record(t, reporterA, "a2", other)
			e := findEdge(t, r.g.Snapshot(time.Minute), "frontend.shop", "catalog.shop")
			if !near(e.LatencyP50Ms, tt.p50) || !near(e.LatencyP99Ms, tt.p99) {
				t.Errorf("p50, p99: got %v, %v ms, want %v, %v", val(e.LatencyP50Ms), val(e.LatencyP99Ms), tt.p50, tt.p99)
			}
			if e.Requests != req+1000 {
				t.Errorf("requests: got %d, want %d (both replicas)", e.Requests, req+1000)
			}
		})
	}
}

func TestUnknownSource(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", t0, &pb.EdgeStats{SourceService: "unknown", DestinationService: "catalog", DestinationNamespace: "shop", Requests: 4}))
	g := r.g.Snapshot(0)
	if got := findEdge(t, g, "unknown.unknown", "catalog.shop").Requests; got != 4 {
		t.Errorf("requests from unknown: got %d, want 4", got)
	}
	if n := findNode(t, g, "unknown.unknown"); n.Proxies != 0 {
		t.Errorf("unknown node: got %d proxies, want 0", n.Proxies)
	}
	if e := findEdge(t, g, "unknown.unknown", "catalog.shop"); !near(e.MTLSShare, 0) {
		t.Errorf("mtls share: got %v, want 0", val(e.MTLSShare))
	}
}

func TestIdleServiceIsNodeAndNodesAreSorted(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", t0, edge("frontend.shop", "catalog.shop", 3), edge("admin.ops", "catalog.shop", 1)))
	r.record(t, reporterB, "b1", stats("batch.jobs", t0))
	r.record(t, reporterB, "b2", stats("batch.jobs", t0))
	g := r.g.Snapshot(0)
	var nodes []string
	for _, n := range g.Nodes {
		nodes = append(nodes, n.Service+"."+n.Namespace)
	}
	if want := []string{"batch.jobs", "admin.ops", "catalog.shop", "frontend.shop"}; !equal(nodes, want) {
		t.Errorf("nodes: got %v, want %v", nodes, want)
	}
	if n := findNode(t, g, "batch.jobs"); n.Proxies != 2 || n.Requests != 0 || n.RequestRate != 0 || n.SuccessRate != nil {
		t.Errorf("idle node: got %+v, want 2 proxies and no traffic", n)
	}
	if len(g.Edges) != 2 || g.Edges[0].Source != ref("admin.ops") || g.Edges[1].Source != ref("frontend.shop") {
		t.Errorf("edges: got %+v, want admin.ops then frontend.shop", g.Edges)
	}
	if n := findNode(t, g, "catalog.shop"); n.Requests != 4 {
		t.Errorf("catalog inbound: got %d, want 4", n.Requests)
	}
	if g.Proxies != 3 {
		t.Errorf("proxies: got %d, want 3", g.Proxies)
	}
}

func TestSilentInstanceLeavesTheWindow(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", t0, edge("frontend.shop", "catalog.shop", 3)))
	r.clk.Advance(2 * time.Minute)
	if g := r.g.Snapshot(time.Minute); len(g.Nodes) != 0 || len(g.Edges) != 0 || g.Proxies != 0 {
		t.Errorf("1m after the last report: got %+v, want an empty graph", g)
	}
	if g := r.g.Snapshot(3 * time.Minute); len(g.Edges) != 1 {
		t.Errorf("3m window: got edges %+v, want the edge", g.Edges)
	}
}

func TestWindowIsClamped(t *testing.T) {
	r := newRig(t, graph.Options{MaxWindow: 5 * time.Minute})
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{{0, "1m0s"}, {time.Hour, "5m0s"}, {time.Millisecond, "1s"}, {-time.Minute, "1s"}, {90 * time.Second, "1m30s"}} {
		if got := r.g.Snapshot(tt.in); got.Window != tt.want || got.Nodes == nil || got.Edges == nil {
			t.Errorf("Snapshot(%v): got window %q, nodes %v, edges %v; want %q and empty lists", tt.in, got.Window, got.Nodes, got.Edges, tt.want)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSuccessExcludesDenials: a request refused by authorization is
// neither a success nor a failure; it counts in the denial rate.
func TestSuccessExcludesDenials(t *testing.T) {
	tests := []struct {
		name                       string
		requests, failures, denied uint64
		wantSuccess, wantDenial    float64
	}{
		{"all served", 100, 0, 0, 1, 0},
		{"denials only", 100, 0, 25, 0.75, 0.25},
		{"failures only", 100, 10, 0, 0.9, 0},
		{"both", 100, 10, 30, 0.6, 0.3},
		{"all denied", 100, 0, 100, 0, 1},
		// Counts come from proxies: over-reports never make rates fall below 0.
		{"more bad than requests", 100, 60, 60, 0, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, graph.Options{})
			r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 0)))
			r.clk.Advance(10 * time.Second)
			r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", tt.requests), func(e *pb.EdgeStats) {
				e.Failures, e.Denied = tt.failures, tt.denied
			})))
			g := r.g.Snapshot(time.Minute)
			for what, tr := range map[string]adminapi.Traffic{"edge": findEdge(t, g, "frontend.shop", "catalog.shop").Traffic, "node": findNode(t, g, "catalog.shop").Traffic} {
				if !near(tr.SuccessRate, tt.wantSuccess) || !near(tr.DenialRate, tt.wantDenial) || tr.Denied != tt.denied {
					t.Errorf("%s: got success %v, denial rate %v, denied %d; want %v, %v, %d",
						what, val(tr.SuccessRate), val(tr.DenialRate), tr.Denied, tt.wantSuccess, tt.wantDenial, tt.denied)
				}
			}
		})
	}
}
