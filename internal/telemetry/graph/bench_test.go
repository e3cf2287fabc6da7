package graph_test

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

// BenchmarkRecord: 100 instances of a service with 20 callers each,
// reporting every 10s.
func BenchmarkRecord(b *testing.B) {
	clk := clock.NewFake(t0)
	g := graph.New(graph.Options{Now: clk.Now})
	reports := make([]*pb.TrafficStats, 100)
	for i := range reports {
		var edges []*pb.EdgeStats
		for j := range 20 {
			edges = append(edges, with(edge(fmt.Sprintf("caller%d.shop", j), "catalog.shop", 100), func(e *pb.EdgeStats) {
				e.LatencyCounts = []uint64{40, 30, 20, 10}
			}))
		}
		reports[i] = stats("catalog.shop", longAgo, edges...)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		st := reports[i%len(reports)]
		for _, e := range st.Edges {
			e.Requests++
			e.LatencyCounts[0]++
		}
		if err := g.Record(reporterA, fmt.Sprint(i%len(reports)), st); err != nil {
			b.Fatal(err)
		}
		clk.Advance(100 * time.Millisecond)
	}
}

// BenchmarkSnapshot: the graph of BenchmarkRecord's mesh after 10 minutes.
func BenchmarkSnapshot(b *testing.B) {
	clk := clock.NewFake(t0)
	g := graph.New(graph.Options{Now: clk.Now})
	for k := range uint64(60) {
		for i := range 100 {
			var edges []*pb.EdgeStats
			for j := range 20 {
				edges = append(edges, with(edge(fmt.Sprintf("caller%d.shop", j), "catalog.shop", 100*k), func(e *pb.EdgeStats) {
					e.LatencyCounts = []uint64{40 * k, 30 * k, 20 * k, 10 * k}
				}))
			}
			if err := g.Record(reporterA, fmt.Sprint(i), stats("catalog.shop", longAgo, edges...)); err != nil {
				b.Fatal(err)
			}
		}
		clk.Advance(10 * time.Second)
	}
	b.ReportAllocs()
	for b.Loop() {
		g.Snapshot(time.Minute)
	}
}
