package graph_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry/graph"
)

var (
	t0     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	bounds = []float64{0.01, 0.1, 1}
	// longAgo is the counters_since of a proxy started long before t0.
	longAgo = t0.Add(-time.Hour)
)

const (
	reporterA = "spiffe://trellis.local/ns/shop/sa/catalog"
	reporterB = "spiffe://trellis.local/ns/shop/sa/frontend"
)

// rig is a Graph on a fake clock starting at t0, registered with a
// pedantic registry.
type rig struct {
	clk *clock.Fake
	g   *graph.Graph
	reg *prometheus.Registry
}

func newRig(t *testing.T, opts graph.Options) *rig {
	t.Helper()
	r := &rig{clk: clock.NewFake(t0), reg: prometheus.NewPedanticRegistry()}
	opts.Now = r.clk.Now
	if opts.LatencyBounds == nil {
		opts.LatencyBounds = bounds
	}
	r.g = graph.New(opts)
	r.reg.MustRegister(r.g)
	return r
}

// record records st for (reporter, instance) now and fails the test on
// error.
func (r *rig) record(t *testing.T, reporter, instance string, st *pb.TrafficStats) {
	t.Helper()
	if err := r.g.Record(reporter, instance, st); err != nil {
		t.Fatalf("Record(%s, %s): %v", reporter, instance, err)
	}
}

// series is one series of a gathered metric.
type series struct {
	value   float64 // a counter's or gauge's value, a histogram's count
	sum     float64 // a histogram's sum
	buckets map[float64]uint64
}

// metric returns the value of a counter or gauge (a histogram's count) of
// the series whose labels include all of match ("k=v"), or -1 without
// such a series.
func (r *rig) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	s, ok := r.series(t, name, match...)
	if !ok {
		return -1
	}
	return s.value
}

func (r *rig) series(t *testing.T, name string, match ...string) (series, bool) {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, kv := range match {
				k, v, _ := strings.Cut(kv, "=")
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue metrics
				}
			}
			var s series
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				h := m.GetHistogram()
				s.value, s.sum = float64(h.GetSampleCount()), h.GetSampleSum()
				s.buckets = make(map[float64]uint64)
				for _, b := range h.GetBucket() {
					s.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
				}
			}
			return s, true
		}
	}
	return series{}, false
}

// stats is a report of service.namespace (svc as "name.namespace").
func stats(svc string, since time.Time, edges ...*pb.EdgeStats) *pb.TrafficStats {
	name, ns, _ := strings.Cut(svc, ".")
	st := &pb.TrafficStats{Service: name, Namespace: ns, LatencyBoundsSeconds: bounds, Edges: edges}
	if !since.IsZero() {
		st.CountersSince = timestamppb.New(since)
	}
	return st
}

// edge is src -> dst ("name.namespace") with requests and no failures,
// denials or latency, all over mTLS.
func edge(src, dst string, requests uint64) *pb.EdgeStats {
	sn, sns, _ := strings.Cut(src, ".")
	dn, dns, _ := strings.Cut(dst, ".")
	return &pb.EdgeStats{SourceService: sn, SourceNamespace: sns, DestinationService: dn, DestinationNamespace: dns, Requests: requests, MtlsRequests: requests}
}

func with(e *pb.EdgeStats, f func(*pb.EdgeStats)) *pb.EdgeStats {
	f(e)
	return e
}

func ref(svc string) adminapi.ServiceRef {
	name, ns, _ := strings.Cut(svc, ".")
	return adminapi.ServiceRef{Service: name, Namespace: ns}
}

func findEdge(t *testing.T, g adminapi.Graph, src, dst string) adminapi.GraphEdge {
	t.Helper()
	for _, e := range g.Edges {
		if e.Source == ref(src) && e.Destination == ref(dst) {
			return e
		}
	}
	t.Fatalf("no edge %s -> %s in %+v", src, dst, g.Edges)
	return adminapi.GraphEdge{}
}

func findNode(t *testing.T, g adminapi.Graph, svc string) adminapi.GraphNode {
	t.Helper()
	for _, n := range g.Nodes {
		if n.ServiceRef == ref(svc) {
			return n
		}
	}
	t.Fatalf("no node %s in %+v", svc, g.Nodes)
	return adminapi.GraphNode{}
}

func val(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func near(got *float64, want float64) bool {
	return got != nil && *got > want-1e-9 && *got < want+1e-9
}
