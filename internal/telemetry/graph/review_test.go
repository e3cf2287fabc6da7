package graph_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

// A restarted proxy that keeps its instance (a spool) reports a new
// counters_since: its counts start again even when they already exceed
// the old ones, in the window and in the mesh totals.
func TestCountersSinceChangeIsReset(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 10)))
	r.clk.Advance(10 * time.Second)
	restarted := r.clk.Now().Add(-time.Second)
	r.record(t, reporterA, "a1", stats("catalog.shop", restarted, edge("frontend.shop", "catalog.shop", 15)))
	if got := findEdge(t, r.g.Snapshot(5*time.Second), "frontend.shop", "catalog.shop").Requests; got != 15 {
		t.Errorf("requests in the window after a restart: got %d, want 15", got)
	}
	if got := r.metric(t, "trellis_mesh_requests_total", "source_service=frontend"); got != 25 {
		t.Errorf("trellis_mesh_requests_total: got %v, want 25 (10 before the restart, 15 after)", got)
	}
}

// One reporter inventing instances evicts its own oldest, never another
// reporter's, and never fills the graph.
func TestInstancesPerReporterBounded(t *testing.T) {
	r := newRig(t, graph.Options{MaxInstancesPerReporter: 4, MaxInstances: 6})
	r.record(t, reporterB, "b1", stats("frontend.shop", longAgo))
	for i := range 20 {
		r.clk.Advance(time.Second)
		r.record(t, reporterA, fmt.Sprintf("a%d", i), stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 1)))
	}
	g := r.g.Snapshot(time.Minute)
	if g.Proxies != 5 {
		t.Errorf("proxies: got %d, want 5 (4 of the flooding reporter, 1 other)", g.Proxies)
	}
	for _, n := range g.Nodes {
		if n.Service == "frontend" && n.Proxies != 1 {
			t.Errorf("frontend lost its instance to the flood: %+v", n)
		}
	}
}

// Only workload identities report traffic, in their own namespace.
func TestCheckBinding(t *testing.T) {
	for _, tc := range []struct {
		reporter, svc string
		ok            bool
	}{
		{reporterA, "catalog.shop", true},
		{reporterA, "catalog.billing", false},
		{"spiffe://trellis.local/collector", "catalog.shop", false},
		{"not a spiffe id", "catalog.shop", false},
	} {
		err := graph.CheckBinding(tc.reporter, stats(tc.svc, longAgo, edge("frontend.shop", tc.svc, 1)))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, graph.ErrInvalidStats)) {
			t.Errorf("CheckBinding(%s, %s) = %v, want ok=%v", tc.reporter, tc.svc, err, tc.ok)
		}
	}
}
