package graph_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

func TestRecordRefusesInvalidStats(t *testing.T) {
	valid := func(f func(*pb.TrafficStats)) *pb.TrafficStats {
		st := stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 10), func(e *pb.EdgeStats) {
			e.LatencyCounts = []uint64{1, 2, 3, 4}
		}))
		f(st)
		return st
	}
	onEdge := func(f func(*pb.EdgeStats)) *pb.TrafficStats {
		return valid(func(st *pb.TrafficStats) { f(st.Edges[0]) })
	}
	manyEdges := make([]*pb.EdgeStats, 4097)
	for i := range manyEdges {
		manyEdges[i] = edge("frontend.shop", "catalog.shop", 1)
		manyEdges[i].SourceService = strings.Repeat("x", 1+i%200) + string(rune('a'+i/200))
	}
	manyBounds := make([]float64, 65)
	for i := range manyBounds {
		manyBounds[i] = float64(i + 1)
	}
	tests := []struct {
		name string
		st   *pb.TrafficStats
		msg  string
	}{
		{"nil", nil, "no stats"},
		{"no service", valid(func(st *pb.TrafficStats) { st.Service = "" }), "service: empty"},
		{"no namespace", valid(func(st *pb.TrafficStats) { st.Namespace = "" }), "namespace: empty"},
		{"long service", valid(func(st *pb.TrafficStats) { st.Service = strings.Repeat("s", 64) }), "64 bytes; at most 63"},
		{"bad utf-8", valid(func(st *pb.TrafficStats) { st.Namespace = "sh\xffop" }), "not a DNS label"},
		{"control character", valid(func(st *pb.TrafficStats) { st.Service = "cat\nalog" }), "not a DNS label"},
		{"upper case", valid(func(st *pb.TrafficStats) { st.Service = "Catalog" }), "not a DNS label"},
		{"leading dash", valid(func(st *pb.TrafficStats) { st.Service = "-catalog" }), "not a DNS label"},
		{"bidi override", onEdge(func(e *pb.EdgeStats) { e.SourceService = "web\u202e" }), "not a DNS label"},
		{"bad counters_since", valid(func(st *pb.TrafficStats) { st.CountersSince = &timestamppb.Timestamp{Nanos: -1} }), "counters_since"},
		{"too many bounds", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = manyBounds; st.Edges[0].LatencyCounts = nil }), "65 latency bounds; at most 64"},
		{"zero bound", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = []float64{0, 1, 2} }), "above 0 and at most 1e+06 seconds"},
		{"infinite bound", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = []float64{1, 2, math.Inf(1)} }), "above 0 and at most 1e+06 seconds"},
		{"huge bound", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = []float64{1, 2, 1e300} }), "at most 1e+06 seconds"},
		{"NaN bound", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = []float64{math.NaN(), 1, 2} }), "above 0 and at most 1e+06 seconds"},
		{"bounds not ascending", valid(func(st *pb.TrafficStats) { st.LatencyBoundsSeconds = []float64{1, 1, 2} }), "ascend strictly"},
		{"too many edges", valid(func(st *pb.TrafficStats) { st.Edges = manyEdges }), "4097 edges; at most 4096"},
		{"duplicate edge", valid(func(st *pb.TrafficStats) { st.Edges = append(st.Edges, edge("frontend.shop", "catalog.shop", 1)) }), "appears twice"},
		{"nil edge", valid(func(st *pb.TrafficStats) { st.Edges = append(st.Edges, nil) }), "edge 1: empty"},
		{"no source", onEdge(func(e *pb.EdgeStats) { e.SourceService = "" }), "source_service: empty"},
		{"no source namespace", onEdge(func(e *pb.EdgeStats) { e.SourceNamespace = "" }), "source_namespace: empty"},
		{"unknown source, bad namespace", onEdge(func(e *pb.EdgeStats) { e.SourceService, e.SourceNamespace = "unknown", "\x00" }), "source_namespace"},
		{"no destination", onEdge(func(e *pb.EdgeStats) { e.DestinationService = "" }), "destination_service: empty"},
		{"control in destination namespace", onEdge(func(e *pb.EdgeStats) { e.DestinationNamespace = "a\u0085b" }), "not a DNS label"},
		{"failures over requests", onEdge(func(e *pb.EdgeStats) { e.Failures = 11 }), "failures 11 exceed requests 10"},
		{"mtls over requests", onEdge(func(e *pb.EdgeStats) { e.MtlsRequests = 11 }), "mtls_requests 11 exceed"},
		{"denied over requests", onEdge(func(e *pb.EdgeStats) { e.Denied = 11 }), "denied 11 exceed"},
		{"latency over requests", onEdge(func(e *pb.EdgeStats) { e.LatencyCounts = []uint64{1, 2, 3, 5} }), "more than requests 10"},
		{"latency overflowing", onEdge(func(e *pb.EdgeStats) { e.LatencyCounts = []uint64{math.MaxUint64, 2, 0, 0} }), "more than requests"},
		{"latency counts too short", onEdge(func(e *pb.EdgeStats) { e.LatencyCounts = []uint64{1, 2, 3} }), "3 latency counts for 3 bounds; want 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, graph.Options{})
			err := r.g.Record(reporterA, "a1", tt.st)
			if !errors.Is(err, graph.ErrInvalidStats) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want ErrInvalidStats containing %q", err, tt.msg)
			}
			if g := r.g.Snapshot(0); g.Proxies != 0 || len(g.Nodes) != 0 {
				t.Errorf("after a refused report: got %+v, want an empty graph", g)
			}
			if got := r.metric(t, "trellis_mesh_requests_total"); got != -1 {
				t.Errorf("mesh requests after a refused report: got %v, want no series", got)
			}
		})
	}
}

func TestRecordAcceptsEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		st   *pb.TrafficStats
	}{
		{"no edges, no bounds", &pb.TrafficStats{Service: "catalog", Namespace: "shop"}},
		{"unknown source without namespace", stats("catalog.shop", longAgo, &pb.EdgeStats{SourceService: "unknown", DestinationService: "catalog", DestinationNamespace: "shop"})},
		{"no latency counts", stats("catalog.shop", longAgo, edge("frontend.shop", "catalog.shop", 10))},
		{"longest names", stats(strings.Repeat("s", 63)+"."+strings.Repeat("n", 63), longAgo)},
		{"digits and dashes", stats("svc-2.ns-0", longAgo)},
		{"64 bounds", func() *pb.TrafficStats {
			st := stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 65), func(e *pb.EdgeStats) {
				e.LatencyCounts = make([]uint64, 65)
				for i := range e.LatencyCounts {
					e.LatencyCounts[i] = 1
				}
			}))
			st.LatencyBoundsSeconds = make([]float64, 64)
			for i := range st.LatencyBoundsSeconds {
				st.LatencyBoundsSeconds[i] = float64(i+1) / 1000
			}
			return st
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, graph.Options{})
			if err := r.g.Record(reporterA, "a1", tt.st); err != nil {
				t.Fatalf("got %v, want nil", err)
			}
		})
	}
}
