package collector_test

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
)

// withShapes is trafficStats(requests) with the requests as one shape,
// and some overflow.
func withShapes(requests uint64) *pb.TrafficStats {
	s := trafficStats(requests)
	s.Edges[0].Shapes = []*pb.PathShape{{Method: "GET", PathTemplate: "/items/{id}", Requests: requests, Denied: 1,
		FirstSeen: timestamppb.New(countersSince), LastSeen: timestamppb.Now()}}
	s.Edges[0].ShapesOverflow = 2
	return s
}

// Shapes reported over a real stream are learned, only from the edges the
// reporter may report (its own service's), and survive a collector
// restart without counting twice.
func TestShapesLearnedAndKeptAcrossRestart(t *testing.T) {
	pki := collectortest.NewPKI(t)
	c := pki.StartCollector(t, collectortest.Config{})
	collector.SetStatsGap(c.Server, 0)
	id := pki.WorkloadID(t, "shop", "catalog")
	tlsCfg := pki.ClientTLS(t, id)
	st, _ := hello(t, dial(t, c.Addr, tlsCfg), "inst-1")
	sendStats(t, st, 1, withShapes(10))
	sendStats(t, st, 2, withShapes(25))
	// A workload of another namespace cannot report catalog's edges
	// (graph.CheckBinding): refused, not learned.
	other, _ := hello(t, dial(t, c.Addr, pki.ClientTLS(t, pki.WorkloadID(t, "ops", "intruder"))), "inst-x")
	sendStats(t, other, 1, withShapes(1000))

	check := func(when string, c *collectortest.Collector) {
		t.Helper()
		edges := c.Shapes().Edges("shop")
		if len(edges) != 1 || len(edges[0].Shapes) != 1 {
			t.Fatalf("%s: edges %+v, want one edge with one shape", when, edges)
		}
		e := edges[0]
		if sh := e.Shapes[0]; sh.Requests != 25 || sh.Denied != 1 || sh.Template != "/items/{id}" || e.Overflow != 2 {
			t.Errorf("%s: %+v, want 25 requests (growth, not the sum of reports), 1 denied, overflow 2", when, e)
		}
	}
	check("before restart", c)
	c = c.Restart(t)
	check("after restart", c)
	// The same proxy instance reports again after the restart: only growth
	// counts.
	collector.SetStatsGap(c.Server, 0)
	st, _ = hello(t, dial(t, c.Addr, tlsCfg), "inst-1")
	sendStats(t, st, 3, withShapes(25))
	check("after a repeated report", c)
	sendStats(t, st, 4, withShapes(30))
	if got := c.Shapes().Edges("")[0].Shapes[0].Requests; got != 30 {
		t.Errorf("after growth to 30: %d requests", got)
	}
}
