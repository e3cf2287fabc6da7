package shapes

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// report is one proxy's cumulative report: shapes given as
// "METHOD TEMPLATE" -> requests.
func report(since time.Time, overflow uint64, shapes map[string]uint64) *pb.TrafficStats {
	e := &pb.EdgeStats{SourceService: "frontend", SourceNamespace: "shop", DestinationService: "catalog", DestinationNamespace: "shop", ShapesOverflow: overflow}
	for k, n := range shapes {
		var m, p string
		fmt.Sscanf(k, "%s %s", &m, &p)
		e.Shapes = append(e.Shapes, &pb.PathShape{Method: m, PathTemplate: p, Requests: n, Denied: n / 10,
			FirstSeen: timestamppb.New(since), LastSeen: timestamppb.New(since.Add(time.Minute))})
		e.Requests += n
	}
	return &pb.TrafficStats{Service: "catalog", Namespace: "shop", CountersSince: timestamppb.New(since), Edges: []*pb.EdgeStats{e}}
}

func shapeOf(t *testing.T, s *Store, method, tmpl string) Shape {
	t.Helper()
	for _, e := range s.Edges("") {
		for _, sh := range e.Shapes {
			if sh.Method == method && sh.Template == tmpl {
				return sh
			}
		}
	}
	t.Fatalf("no shape %s %s in %+v", method, tmpl, s.Edges(""))
	return Shape{}
}

func TestRecordCountsGrowthAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shapes.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	s.Record("a", report(t0, 0, map[string]uint64{"GET /items/{id}": 100, "POST /items": 10}))
	s.Record("a", report(t0, 0, map[string]uint64{"GET /items/{id}": 150, "POST /items": 10}))
	s.Record("b", report(t0, 3, map[string]uint64{"GET /items/{id}": 5}))
	if got := shapeOf(t, s, "GET", "/items/{id}"); got.Requests != 155 || got.Denied != 15 {
		t.Errorf("GET /items/{id}: %+v, want 155 requests (100, +50, +5 from another instance), 15 denied", got)
	}
	// The proxy restarted: its counters start over, and count in full.
	t1 := t0.Add(30 * time.Minute)
	s.Record("a", report(t1, 0, map[string]uint64{"GET /items/{id}": 7}))
	if got := shapeOf(t, s, "GET", "/items/{id}").Requests; got != 162 {
		t.Errorf("after a proxy restart: %d requests, want 162", got)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	// The collector restarted: what it learned, and the instances' last
	// values, come back; a repeated report adds nothing.
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2.Record("a", report(t1, 0, map[string]uint64{"GET /items/{id}": 7}))
	if got := shapeOf(t, s2, "GET", "/items/{id}"); got.Requests != 162 || !got.FirstSeen.Equal(t0) {
		t.Errorf("after a collector restart: %+v, want 162 requests first seen %v", got, t0)
	}
	if e := s2.Edges("shop")[0]; e.Overflow != 3 {
		t.Errorf("overflow %d, want the proxy's 3", e.Overflow)
	}
	if len(s2.Edges("other")) != 0 {
		t.Error("namespace filter")
	}
}

func TestCollapseHighCardinality(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "shapes.json"), nil)
	since := time.Now()
	m := map[string]uint64{"GET /users/me": 1}
	for i := range CollapseAt + 4 {
		m[fmt.Sprintf("GET /users/name%c%c/cart", 'a'+i%26, 'a'+i/26)] = 2
	}
	s.Record("a", report(since, 0, m))
	e := s.Edges("")[0]
	// /users/me has another shape (fewer segments); the names collapse.
	if len(e.Shapes) != 2 {
		t.Fatalf("shapes %+v, want /users/me and /users/{id}/cart", e.Shapes)
	}
	if got := shapeOf(t, s, "GET", "/users/{id}/cart").Requests; got != 2*(CollapseAt+4) {
		t.Errorf("collapsed shape has %d requests, want %d", got, 2*(CollapseAt+4))
	}
	// A new name later joins the collapsed shape.
	s.Record("b", report(since, 0, map[string]uint64{"GET /users/zed/cart": 5}))
	if got := shapeOf(t, s, "GET", "/users/{id}/cart").Requests; got != 2*(CollapseAt+4)+5 {
		t.Errorf("after a new name: %d requests", got)
	}
}

func TestBounded(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "shapes.json"), nil)
	since := time.Now()
	m := map[string]uint64{}
	// Distinct shapes that do not collapse: each differs in two segments.
	for i := range MaxShapesPerEdge + 50 {
		m[fmt.Sprintf("GET /a%d/b%d", i, i)] = 1
	}
	s.Record("a", report(since, 0, m))
	e := s.Edges("")[0]
	if len(e.Shapes) != MaxShapesPerEdge || e.Overflow != 50 {
		t.Errorf("%d shapes, overflow %d: want %d and 50", len(e.Shapes), e.Overflow, MaxShapesPerEdge)
	}
}

func TestReportCannotPlantTemplates(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "shapes.json"), nil)
	s.Record("a", report(time.Now(), 0, map[string]uint64{"GET /items/12345": 1, "EXTRAORDINARILYLONGMETHOD /x": 1}))
	shapeOf(t, s, "GET", "/items/{id}")
	shapeOf(t, s, "OTHER", "/x")
}
