package graph

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func report(requests uint64, sources ...string) *pb.TrafficStats {
	st := &pb.TrafficStats{Service: "catalog", Namespace: "shop"}
	for _, s := range sources {
		st.Edges = append(st.Edges, &pb.EdgeStats{SourceService: s, SourceNamespace: "shop", DestinationService: "catalog", DestinationNamespace: "shop", Requests: requests})
	}
	return st
}

func mustRecord(t *testing.T, g *Graph, instance string, st *pb.TrafficStats) {
	t.Helper()
	if err := g.Record("spiffe://trellis.local/ns/shop/sa/catalog", instance, st); err != nil {
		t.Fatal(err)
	}
}

// A proxy reporting far too often keeps at most maxSamples per edge, and
// they still span the window.
func TestSamplesAreThinned(t *testing.T) {
	clk := clock.NewFake(start)
	g := New(Options{Now: clk.Now, MaxWindow: time.Minute})
	for i := range uint64(10000) {
		mustRecord(t, g, "a1", report(i, "frontend"))
		clk.Advance(5 * time.Millisecond)
	}
	es := g.instances[instanceKey{"spiffe://trellis.local/ns/shop/sa/catalog", "a1"}].edges[edgeKey{src: ref("frontend"), dst: ref("catalog")}]
	if n := len(es.samples); n > maxSamples || n < maxSamples/3 {
		t.Errorf("samples: got %d, want between %d and %d", n, maxSamples/3, maxSamples)
	}
	if first, last := es.samples[0].at, es.latest().at; !first.Equal(start) || !last.Equal(start.Add(9999*5*time.Millisecond)) {
		t.Errorf("samples span %v .. %v, want the first and the latest report", first, last)
	}
	// 200 requests a second; the baseline is the sample nearest before
	// the window, at most two gaps of 50s/(maxSamples/3) before it.
	slack := uint64(2 * 50 * 200 / (maxSamples / 3))
	if got := g.Snapshot(10 * time.Second).Edges; len(got) != 1 || got[0].Requests < 2000 || got[0].Requests > 2000+slack {
		t.Errorf("10s window: got %+v, want 2000 requests and at most %d more", got, slack)
	}
}

func TestOldSamplesAreDropped(t *testing.T) {
	clk := clock.NewFake(start)
	g := New(Options{Now: clk.Now, MaxWindow: time.Minute})
	for i := range uint64(20) {
		mustRecord(t, g, "a1", report(10*i, "frontend"))
		clk.Advance(10 * time.Second)
	}
	// Reports at 0..190s: kept are 130s (the baseline for a window of
	// MaxWindow ending at 190s) to 190s.
	es := g.instances[instanceKey{"spiffe://trellis.local/ns/shop/sa/catalog", "a1"}].edges[edgeKey{src: ref("frontend"), dst: ref("catalog")}]
	if n, first := len(es.samples), es.samples[0].at; n != 7 || !first.Equal(start.Add(130*time.Second)) {
		t.Errorf("got %d samples from %v, want 7 from +130s", n, first)
	}
}

// An instance changing its edges on every report keeps at most
// maxInstanceEdges of them.
func TestEdgesPerInstanceAreBounded(t *testing.T) {
	clk := clock.NewFake(start)
	g := New(Options{Now: clk.Now})
	for r := range 5 {
		var srcs []string
		for i := range maxEdges {
			srcs = append(srcs, fmt.Sprintf("s%d-%d", r, i))
		}
		mustRecord(t, g, "a1", report(1, srcs...))
		clk.Advance(time.Second)
	}
	in := g.instances[instanceKey{"spiffe://trellis.local/ns/shop/sa/catalog", "a1"}]
	if n := len(in.edges); n > maxInstanceEdges {
		t.Errorf("edges: got %d, want at most %d", n, maxInstanceEdges)
	}
	for i := range maxEdges {
		if in.edges[edgeKey{src: ref(fmt.Sprintf("s4-%d", i)), dst: ref("catalog")}] == nil {
			t.Fatalf("edge s4-%d of the latest report was dropped", i)
		}
	}
}

// One identity's instances together hold at most maxReporterEdges edges
// from their reports: a report that would pass it is refused.
func TestEdgesPerReporterAreBounded(t *testing.T) {
	clk := clock.NewFake(start)
	g := New(Options{Now: clk.Now})
	var srcs []string
	for i := range maxEdges {
		srcs = append(srcs, fmt.Sprintf("s%d", i))
	}
	mustRecord(t, g, "a1", report(1, srcs...))
	err := g.Record("spiffe://trellis.local/ns/shop/sa/catalog", "a2", report(1, "one-more"))
	if err == nil {
		t.Fatal("a second instance's edge beyond the identity's bound was accepted")
	}
	if len(g.instances) != 1 {
		t.Errorf("the refused instance was kept: %d instances", len(g.instances))
	}
	if err := g.Record("spiffe://trellis.local/ns/shop/sa/frontend", "b1", report(1, "x")); err != nil {
		t.Errorf("another identity is not limited by the first: %v", err)
	}
}

// Mesh totals of edges nobody reports any more are dropped, oldest
// first, above maxTotals; those of live edges stay.
func TestTotalsAreBounded(t *testing.T) {
	clk := clock.NewFake(start)
	g := New(Options{Now: clk.Now, MaxWindow: time.Second, Expire: time.Second})
	g.maxTotals, g.nextDrop = 20, 20
	mustRecord(t, g, "live", report(1, "keep"))
	for i := range 50 {
		clk.Advance(2 * time.Second) // each instance expires before the next
		mustRecord(t, g, fmt.Sprintf("i%d", i), report(1, fmt.Sprintf("s%d", i)))
		mustRecord(t, g, "live", report(1, "keep"))
	}
	if n := len(g.totals); n > g.maxTotals {
		t.Errorf("totals: got %d, want at most %d", n, g.maxTotals)
	}
	for _, s := range []string{"keep", "s49", "s48"} {
		if g.totals[edgeKey{src: ref(s), dst: ref("catalog")}] == nil {
			t.Errorf("totals of %s were dropped", s)
		}
	}
	if g.totals[edgeKey{src: ref("s0"), dst: ref("catalog")}] != nil {
		t.Error("totals of s0, the oldest idle edge, were kept")
	}
}

func ref(s string) adminapi.ServiceRef { return adminapi.ServiceRef{Service: s, Namespace: "shop"} }
