package graph_test

import (
	"errors"
	"math"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

var frontendToCatalog = []string{"source_service=frontend", "source_namespace=shop", "destination_service=catalog", "destination_namespace=shop"}

func TestMeshCountersSumInstances(t *testing.T) {
	r := newRig(t, graph.Options{})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 100), func(e *pb.EdgeStats) {
		e.Failures, e.MtlsRequests, e.Denied = 5, 90, 2
	})))
	r.record(t, reporterA, "a2", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 10)))
	for _, m := range []struct {
		name string
		want float64
	}{
		{"trellis_mesh_requests_total", 110},
		{"trellis_mesh_request_failures_total", 5},
		{"trellis_mesh_mtls_requests_total", 100},
		{"trellis_mesh_requests_denied_total", 2},
	} {
		if got := r.metric(t, m.name, frontendToCatalog...); got != m.want {
			t.Errorf("%s: got %v, want %v", m.name, got, m.want)
		}
	}
	if got := r.metric(t, "trellis_mesh_proxies_reporting"); got != 2 {
		t.Errorf("proxies reporting: got %v, want 2", got)
	}
}

// A counter reset and an instance's expiry never lower the mesh counters.
func TestMeshCountersStayMonotonic(t *testing.T) {
	r := newRig(t, graph.Options{MaxWindow: time.Minute, Expire: 2 * time.Minute})
	steps := []struct {
		instance string
		requests uint64
		advance  time.Duration
		want     float64
	}{
		{"a1", 100, 10 * time.Second, 100},
		{"a2", 40, 0, 140},
		{"a1", 150, 10 * time.Second, 190},
		{"a1", 20, 10 * time.Second, 210}, // reset: a1 restarted
		{"a1", 25, 3 * time.Minute, 215},
		// a2 (silent since t0) and a1 have expired: their counts stay.
		{"a3", 5, 0, 220},
		{"a2", 41, 0, 261}, // back after expiry: a new instance
	}
	for i, s := range steps {
		r.record(t, reporterA, s.instance, stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", s.requests)))
		if got := r.metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != s.want {
			t.Errorf("step %d (%s at %d): requests_total got %v, want %v", i, s.instance, s.requests, got, s.want)
		}
		r.clk.Advance(s.advance)
	}
	if got := r.metric(t, "trellis_mesh_proxies_reporting"); got != 2 {
		t.Errorf("proxies reporting: got %v, want 2 (a3, a2)", got)
	}
	r.clk.Advance(time.Minute)
	if got := r.metric(t, "trellis_mesh_proxies_reporting"); got != 0 {
		t.Errorf("proxies reporting a minute later: got %v, want 0", got)
	}
	if got := r.metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 261 {
		t.Errorf("requests_total a minute later: got %v, want 261", got)
	}
}

func TestMeshHistogram(t *testing.T) {
	r := newRig(t, graph.Options{})
	lat := func(counts ...uint64) func(*pb.EdgeStats) {
		return func(e *pb.EdgeStats) { e.LatencyCounts = counts }
	}
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 10), lat(4, 3, 2, 1))))
	r.record(t, reporterA, "a2", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 10), lat(0, 10, 0, 0))))
	other := stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 9), lat(9, 0)))
	other.LatencyBoundsSeconds = []float64{0.5}
	r.record(t, reporterA, "a3", other)

	h, ok := r.series(t, "trellis_mesh_request_duration_seconds", frontendToCatalog...)
	if !ok {
		t.Fatal("no trellis_mesh_request_duration_seconds series")
	}
	want := map[float64]uint64{0.01: 4, 0.1: 17, 1: 19}
	for b, n := range want {
		if h.buckets[b] != n {
			t.Errorf("bucket le=%v: got %d, want %d (a3's bounds differ: left out)", b, h.buckets[b], n)
		}
	}
	if h.value != 20 {
		t.Errorf("count: got %v, want 20", h.value)
	}
	// Midpoints: 4*0.005 + 13*0.055 + 2*0.55 + 1*1 (the +Inf bucket at the highest bound).
	if wantSum := 4*0.005 + 13*0.055 + 2*0.55 + 1.0; math.Abs(h.sum-wantSum) > 1e-9 {
		t.Errorf("sum: got %v, want %v", h.sum, wantSum)
	}
	if got := r.metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 29 {
		t.Errorf("requests_total: got %v, want 29 (all three)", got)
	}
}

func TestMaxInstances(t *testing.T) {
	r := newRig(t, graph.Options{MaxInstances: 2, MaxWindow: time.Minute, Expire: 2 * time.Minute})
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo))
	r.record(t, reporterA, "a2", stats("catalog.shop", longAgo))
	err := r.g.Record(reporterB, "b1", stats("frontend.shop", longAgo))
	if !errors.Is(err, graph.ErrTooManyInstances) {
		t.Fatalf("third instance: got %v, want ErrTooManyInstances", err)
	}
	if g := r.g.Snapshot(0); g.Proxies != 2 {
		t.Errorf("proxies after a refused instance: got %d, want 2", g.Proxies)
	}
	// Known instances still report.
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo))
	// Once a2 expires, a new instance fits.
	r.clk.Advance(90 * time.Second)
	r.record(t, reporterA, "a1", stats("catalog.shop", longAgo))
	r.clk.Advance(40 * time.Second)
	r.record(t, reporterB, "b1", stats("frontend.shop", longAgo))
	if g := r.g.Snapshot(time.Minute); g.Proxies != 2 {
		t.Errorf("proxies: got %d, want 2 (a1, b1)", g.Proxies)
	}
}
