package metrics

import (
	"fmt"
	"testing"
	"time"
)

func TestTrafficStatsCarriesShapes(t *testing.T) {
	m := New()
	d := m.Dest(Inbound, "catalog", "shop", "", "", "")
	// Two callers of one edge (two principals of frontend): their shapes
	// add up.
	a := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend", "shop", true, "catalog", "shop")
	b := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend-v2", "shop", true, "catalog", "shop")
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 30 {
		d.Request(a, "GET", fmt.Sprintf("/items/%d", i), 200, false, t0)
		d.Request(b, "GET", fmt.Sprintf("/items/%d", i), 503, false, t0.Add(time.Minute))
	}
	d.Request(a, "POST", "/items", 403, true, t0)
	d.Request(a, "PROPFINDEXTENDEDVERB", "/x", 405, false, t0)
	d.Request(a, "", "", 400, false, t0) // refused before it had a path: no shape

	got := m.TrafficStats("catalog", "shop", t0)
	if len(got.GetEdges()) != 1 {
		t.Fatalf("edges %v", got.GetEdges())
	}
	e := got.GetEdges()[0]
	if len(e.GetShapes()) != 3 {
		t.Fatalf("shapes %v, want GET /items/{id}, POST /items and OTHER /x", e.GetShapes())
	}
	// Sorted by template, then method.
	items, post, other := e.GetShapes()[1], e.GetShapes()[0], e.GetShapes()[2]
	if items.GetMethod() != "GET" || items.GetPathTemplate() != "/items/{id}" || items.GetRequests() != 60 || items.GetFailures() != 30 ||
		!items.GetFirstSeen().AsTime().Equal(t0) || !items.GetLastSeen().AsTime().Equal(t0.Add(time.Minute)) {
		t.Errorf("GET shape %v", items)
	}
	if post.GetMethod() != "POST" || post.GetPathTemplate() != "/items" || post.GetDenied() != 1 {
		t.Errorf("POST shape %v", post)
	}
	if other.GetMethod() != "OTHER" || other.GetPathTemplate() != "/x" {
		t.Errorf("long method shape %v", other)
	}
}

func TestShapesBounded(t *testing.T) {
	m := New()
	d := m.Dest(Inbound, "catalog", "shop", "", "", "")
	s := m.ForSource("scanner", "spiffe://td/ns/shop/sa/scanner", "shop", true, "catalog", "shop")
	now := time.Now()
	for i := range 3 * maxShapes {
		d.Request(s, "GET", fmt.Sprintf("/path-%c%c/x", 'a'+i%26, 'a'+i/26), 404, false, now)
	}
	e := m.TrafficStats("catalog", "shop", now).GetEdges()[0]
	if len(e.GetShapes()) != maxShapes || e.GetShapesOverflow() != 2*maxShapes || e.GetRequests() != 3*maxShapes {
		t.Errorf("%d shapes, overflow %d, requests %d: want %d, %d, %d", len(e.GetShapes()), e.GetShapesOverflow(), e.GetRequests(), maxShapes, 2*maxShapes, 3*maxShapes)
	}
}
