package collector_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
)

func trafficStats(requests uint64) *pb.TrafficStats {
	return &pb.TrafficStats{
		Service: "catalog", Namespace: "shop",
		CountersSince:        timestamppb.New(countersSince),
		LatencyBoundsSeconds: telemetry.LatencyBounds[:],
		Edges: []*pb.EdgeStats{{
			SourceService: "frontend", SourceNamespace: "shop", DestinationService: "catalog", DestinationNamespace: "shop",
			Requests: requests, Failures: 1, MtlsRequests: requests, LatencyCounts: latency(requests),
		}},
	}
}

// countersSince is the simulated proxy's start: one for every report, or
// the collector would take each report for a restart.
var countersSince = time.Now().Add(-5 * time.Second)

// latency puts all but two requests in the first bucket, two in the second.
func latency(requests uint64) []uint64 {
	c := make([]uint64, len(telemetry.LatencyBounds)+1)
	c[0], c[1] = requests-2, 2
	return c
}

var frontendToCatalog = []string{"source_service=frontend", "source_namespace=shop", "destination_service=catalog", "destination_namespace=shop"}

// Stats are not acknowledged: an events batch after them, once
// acknowledged, shows they were handled (one stream handles its batches in
// order).
func sendStats(t *testing.T, st stream, seq uint64, stats *pb.TrafficStats) {
	t.Helper()
	if err := st.Send(&pb.EventBatch{Stats: stats}); err != nil {
		t.Fatal(err)
	}
	if got := send(t, st, events("access", seq)...); got != seq {
		t.Fatalf("ack after stats: got %d, want %d", got, seq)
	}
}

func TestStatsFeedGraphAndMeshMetrics(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	collector.SetStatsGap(c.Server, 0)
	id := pki.WorkloadID(t, "shop", "catalog")
	st, _ := hello(t, dial(t, c.Addr, pki.ClientTLS(t, id)), "inst-1")
	sendStats(t, st, 1, trafficStats(10))

	g := c.Graph().Snapshot(time.Minute)
	if len(g.Edges) != 1 || g.Proxies != 1 {
		t.Fatalf("graph: got %+v, want one edge from one proxy", g)
	}
	e := g.Edges[0]
	if e.Source != (adminapi.ServiceRef{Service: "frontend", Namespace: "shop"}) || e.Destination != (adminapi.ServiceRef{Service: "catalog", Namespace: "shop"}) || e.Requests != 10 || e.LatencyP50Ms == nil {
		t.Errorf("edge: got %+v, want frontend -> catalog, 10 requests, with latency", e)
	}
	if got := c.Metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 10 {
		t.Errorf("trellis_mesh_requests_total: got %v, want 10", got)
	}
	if got := c.Metric(t, "trellis_mesh_request_failures_total", frontendToCatalog...); got != 1 {
		t.Errorf("trellis_mesh_request_failures_total: got %v, want 1", got)
	}
	if got := c.Metric(t, "trellis_mesh_proxies_reporting"); got != 1 {
		t.Errorf("trellis_mesh_proxies_reporting: got %v, want 1", got)
	}
	if got := c.Metric(t, "trellis_collector_stats_reports_total"); got != 1 {
		t.Errorf("trellis_collector_stats_reports_total: got %v, want 1", got)
	}
	if !hasHistogram(t, c, "trellis_mesh_request_duration_seconds") {
		t.Error("no trellis_mesh_request_duration_seconds histogram")
	}

	// A batch with events and stats: both are handled.
	if err := st.Send(&pb.EventBatch{Events: events("access", 2), Stats: trafficStats(25)}); err != nil {
		t.Fatal(err)
	}
	if ack, err := st.Recv(); err != nil || ack.GetThrough() != 2 {
		t.Fatalf("ack of events with stats: got %v, %v; want 2", ack, err)
	}
	if got := c.Metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 25 {
		t.Errorf("trellis_mesh_requests_total after the second report: got %v, want 25", got)
	}
	if got := stored(t, c); !equal(got, want(id.String(), 1, 2)) {
		t.Errorf("stored: got %v, want seq 1 and 2", got)
	}
}

// A refused report is counted and leaves the stream open; stats on the
// hello batch are recorded.
func TestStatsRejectedKeepStreamOpen(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	collector.SetStatsGap(c.Server, 0)
	client := dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "shop", "catalog")))
	st, err := client.Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.EventBatch{HelloInstance: "inst-1", Stats: trafficStats(10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("first ack: %v", err)
	}
	bad := trafficStats(10)
	bad.Edges[0].Failures = 11
	sendStats(t, st, 1, bad)
	sendStats(t, st, 2, &pb.TrafficStats{Service: "catalog"})
	// A proxy reports only its own traffic: not another namespace's, and
	// no edge ending at another service.
	otherNS := trafficStats(50)
	otherNS.Namespace = "billing"
	otherNS.Edges[0].DestinationNamespace = "billing"
	sendStats(t, st, 3, otherNS)
	otherDest := trafficStats(50)
	otherDest.Edges[0].DestinationService = "payments"
	sendStats(t, st, 4, otherDest)
	sendStats(t, st, 5, trafficStats(12))

	if got := c.Metric(t, "trellis_collector_stats_rejected_total", "reason=invalid"); got != 4 {
		t.Errorf("rejected: got %v, want 4", got)
	}
	if got := c.Metric(t, "trellis_collector_stats_reports_total"); got != 2 {
		t.Errorf("reports: got %v, want 2 (hello's and the last)", got)
	}
	if got := c.Metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 12 {
		t.Errorf("trellis_mesh_requests_total: got %v, want 12", got)
	}
}

func hasHistogram(t *testing.T, c *collectortest.Collector, name string) bool {
	t.Helper()
	mfs, err := c.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if m.GetHistogram().GetSampleCount() > 0 {
					return true
				}
			}
		}
	}
	return false
}

// Stats faster than a proxy may send them are dropped unread.
func TestStatsTooFrequentDropped(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	collector.SetStatsGap(c.Server, time.Hour)
	st, _ := hello(t, dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "shop", "catalog"))), "inst-1")
	sendStats(t, st, 1, trafficStats(10))
	sendStats(t, st, 2, trafficStats(20))
	sendStats(t, st, 3, trafficStats(30))
	if got := c.Metric(t, "trellis_collector_stats_rejected_total", "reason=too_frequent"); got != 2 {
		t.Errorf("too_frequent: got %v, want 2", got)
	}
	if got := c.Metric(t, "trellis_mesh_requests_total", frontendToCatalog...); got != 10 {
		t.Errorf("trellis_mesh_requests_total: got %v, want 10 (only the first report counts)", got)
	}
}
