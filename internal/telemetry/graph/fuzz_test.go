package graph_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

// FuzzRecord feeds arbitrary TrafficStats (the wire bytes) to Record,
// twice 10s apart and between two well-formed reports. Record must never
// panic, must refuse only with ErrInvalidStats and then store nothing,
// and every snapshot must stay consistent: no NaN, no negative rates,
// shares within [0, 1], every edge's ends among the nodes, and the
// metrics must gather.
func FuzzRecord(f *testing.F) {
	seeds := []*pb.TrafficStats{
		stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 100), func(e *pb.EdgeStats) {
			e.Failures, e.Denied, e.LatencyCounts = 3, 2, []uint64{50, 30, 15, 5}
		})),
		stats("catalog.shop", t0, edge("frontend.shop", "catalog.shop", 5), &pb.EdgeStats{SourceService: "unknown", DestinationService: "catalog", DestinationNamespace: "shop", Requests: 1}),
		stats("catalog.shop", time.Time{}, edge("frontend.shop", "catalog.shop", math.MaxUint64)),
		{Service: "idle", Namespace: "ns", LatencyBoundsSeconds: []float64{1e-300, 1e6}},
	}
	for _, st := range seeds {
		b, err := proto.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("garbage"))

	f.Fuzz(func(t *testing.T, data []byte) {
		var st pb.TrafficStats
		if proto.Unmarshal(data, &st) != nil {
			return
		}
		r := newRig(t, graph.Options{})
		r.record(t, reporterB, "b1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 10), func(e *pb.EdgeStats) {
			e.LatencyCounts = []uint64{1, 2, 3, 4}
		})))
		for range 2 {
			if err := r.g.Record(reporterA, "a1", &st); err != nil {
				if !errors.Is(err, graph.ErrInvalidStats) {
					t.Fatalf("Record: %v, not ErrInvalidStats", err)
				}
				if g := r.g.Snapshot(0); g.Proxies != 1 {
					t.Fatalf("a refused report was stored: %d proxies, want 1", g.Proxies)
				}
			}
			r.clk.Advance(10 * time.Second)
		}
		r.record(t, reporterB, "b1", stats("catalog.shop", longAgo, with(edge("frontend.shop", "catalog.shop", 20), func(e *pb.EdgeStats) {
			e.LatencyCounts = []uint64{2, 4, 6, 8}
		})))
		for _, w := range []time.Duration{0, time.Second, 15 * time.Second, time.Hour} {
			checkConsistent(t, r.g.Snapshot(w))
		}
		if _, err := r.reg.Gather(); err != nil {
			t.Fatalf("gather: %v", err)
		}
	})
}

func checkConsistent(t *testing.T, g adminapi.Graph) {
	t.Helper()
	nodes := make(map[adminapi.ServiceRef]bool)
	for _, n := range g.Nodes {
		checkTraffic(t, n.ServiceRef.Service, n.Traffic)
		if nodes[n.ServiceRef] {
			t.Errorf("node %+v twice", n.ServiceRef)
		}
		nodes[n.ServiceRef] = true
	}
	for _, e := range g.Edges {
		checkTraffic(t, e.Source.Service+"->"+e.Destination.Service, e.Traffic)
		if !nodes[e.Source] || !nodes[e.Destination] {
			t.Errorf("edge %+v -> %+v: an end is not a node", e.Source, e.Destination)
		}
		if e.Requests == 0 {
			t.Errorf("edge %+v -> %+v without requests", e.Source, e.Destination)
		}
	}
}

func checkTraffic(t *testing.T, what string, tr adminapi.Traffic) {
	t.Helper()
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) || f < 0 }
	if bad(tr.RequestRate) {
		t.Errorf("%s: request rate %v", what, tr.RequestRate)
	}
	if tr.SuccessRate != nil && tr.DenialRate != nil && *tr.SuccessRate+*tr.DenialRate > 1+1e-9 {
		t.Errorf("%s: success %v and denial rate %v add up to more than 1", what, *tr.SuccessRate, *tr.DenialRate)
	}
	for name, p := range map[string]*float64{"success rate": tr.SuccessRate, "denial rate": tr.DenialRate, "mtls share": tr.MTLSShare} {
		if (p == nil) != (tr.Requests == 0) || p != nil && (bad(*p) || *p > 1) {
			t.Errorf("%s: %s %v with %d requests", what, name, val(p), tr.Requests)
		}
	}
	if tr.Denied > tr.Requests {
		t.Errorf("%s: %d denied of %d requests", what, tr.Denied, tr.Requests)
	}
	p50, p99 := tr.LatencyP50Ms, tr.LatencyP99Ms
	if (p50 == nil) != (p99 == nil) || p50 != nil && (bad(*p50) || bad(*p99) || *p50 > *p99) {
		t.Errorf("%s: p50 %v, p99 %v", what, val(p50), val(p99))
	}
	if p50 != nil && tr.Requests == 0 {
		t.Errorf("%s: latency without requests", what)
	}
}
