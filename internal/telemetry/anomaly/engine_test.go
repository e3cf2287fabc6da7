package anomaly

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// stats is one instance's cumulative report of catalog's edges.
func stats(since time.Time, edges ...*pb.EdgeStats) *pb.TrafficStats {
	return &pb.TrafficStats{Service: "catalog", Namespace: "shop", CountersSince: timestamppb.New(since), Edges: edges}
}

func edgeFrom(src string, requests, denied uint64, shapes ...string) *pb.EdgeStats {
	e := &pb.EdgeStats{SourceService: src, SourceNamespace: "shop", DestinationService: "catalog", DestinationNamespace: "shop", Requests: requests, Denied: denied}
	for _, s := range shapes {
		m, p, _ := strings.Cut(s, " ")
		e.Shapes = append(e.Shapes, &pb.PathShape{Method: m, PathTemplate: p, Requests: requests, Denied: denied})
	}
	return e
}

func TestNewEdgeAndPathAfterLearningOnceAnEpisode(t *testing.T) {
	var got []Alert
	e := New(Config{Interval: time.Minute, LearningWindow: time.Hour, Cooldown: 10 * time.Minute}, func(a Alert) { got = append(got, a) })
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var n uint64
	step := func(now time.Time, extra ...*pb.EdgeStats) {
		n += 10
		e.Record("i1", stats(t0, append([]*pb.EdgeStats{edgeFrom("frontend", n, 0, "GET /items/{id}")}, extra...)...), now)
		e.Tick(now.Add(time.Minute - time.Millisecond))
	}
	now := t0
	for ; now.Before(t0.Add(90 * time.Minute)); now = now.Add(time.Minute) {
		step(now)
	}
	if len(got) != 0 {
		t.Fatalf("alerts during steady traffic: %+v", got)
	}
	// A new caller after the learning window: one new_edge alert, however
	// long it keeps calling.
	var m uint64
	for range 5 {
		m += 3
		step(now, edgeFrom("batch", m, 0, "GET /report"))
		now = now.Add(time.Minute)
	}
	if len(got) != 1 || got[0].Detector != DetectorNewEdge || got[0].Principal != "batch.shop" || got[0].Service != "catalog.shop" ||
		!strings.Contains(got[0].Explanation, "first time") || !got[0].Started.Equal(now.Add(-3*time.Minute-time.Millisecond)) {
		t.Fatalf("alerts %+v, want one new_edge from batch.shop", got)
	}
	// frontend calls an admin path on its known edge, denied.
	fe := edgeFrom("frontend", n+12, 2, "GET /items/{id}")
	fe.Shapes[0].Requests, fe.Shapes[0].Denied = n+10, 0
	fe.Shapes = append(fe.Shapes, &pb.PathShape{Method: "GET", PathTemplate: "/admin/users", Requests: 2, Denied: 2})
	e.Record("i1", stats(t0, fe, edgeFrom("batch", m, 0, "GET /report")), now)
	e.Tick(now.Add(time.Minute - time.Millisecond))
	e.Tick(now.Add(2*time.Minute - time.Millisecond)) // new paths wait one more interval, in case they are a scan's
	if len(got) != 2 || got[1].Detector != DetectorNewPath || got[1].Severity != SeverityHigh || got[1].Detail != "GET /admin/users" {
		t.Fatalf("alerts %+v, want a high new_path for GET /admin/users", got)
	}
}

func TestNewPathFromARolloutIsNotAnAlert(t *testing.T) {
	var got []Alert
	e := New(Config{Interval: time.Minute, LearningWindow: time.Hour}, func(a Alert) { got = append(got, a) })
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	for i := uint64(1); now.Before(t0.Add(2 * time.Hour)); i++ {
		e.Record("i1", stats(t0, edgeFrom("frontend", 10*i, 0, "GET /items/{id}")), now)
		e.Tick(now.Add(time.Minute - time.Millisecond))
		now = now.Add(time.Minute)
	}
	// catalog rolls out (a new instance) and frontend starts using a new
	// path of it: explained, no alert.
	e.Record("i2", stats(now, edgeFrom("frontend", 5, 0, "GET /v2/items/{id}")), now)
	if len(got) != 0 {
		t.Fatalf("alerts %+v, want none for a path that came with a rollout", got)
	}
}

func TestDenyBurst(t *testing.T) {
	var got []Alert
	e := New(Config{Interval: time.Minute, LearningWindow: time.Hour}, func(a Alert) { got = append(got, a) })
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	var req, den uint64
	for i := range 120 {
		req += 20
		if i%10 == 0 {
			den++ // an occasional denial is normal
		}
		if i >= 100 && i < 103 {
			req, den = req+60, den+60
		}
		e.Record("i1", stats(t0, edgeFrom("frontend", req, den)), now)
		e.Tick(now.Add(time.Minute - time.Millisecond))
		now = now.Add(time.Minute)
	}
	if len(got) != 1 || got[0].Detector != DetectorDenyBurst || got[0].Principal != "frontend.shop" || got[0].Observed < 60 {
		t.Fatalf("alerts %+v, want one deny_burst of at least 60", got)
	}
}

func TestCertificateAddress(t *testing.T) {
	var got []Alert
	e := New(Config{LearningWindow: time.Hour}, func(a Alert) { got = append(got, a) })
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const id = "spiffe://trellis.local/ns/shop/sa/frontend"
	e.CertIssued(id, "10.0.0.5:41000", t0)
	e.CertIssued(id, "10.0.0.6:41000", t0.Add(2*time.Hour)) // same /24: a new node of the same network
	e.CertIssued(id, "[fd00::1]:41000", t0.Add(3*time.Hour))
	e.CertIssued(id, "[fd00::2]:41000", t0.Add(4*time.Hour)) // same /64
	if len(got) != 1 || got[0].Detector != DetectorNewAddress || got[0].Detail != "fd00::1" {
		t.Fatalf("alerts %+v, want one new_address for fd00::1", got)
	}
}
