package console

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
)

func TestLayoutIsLayeredAndDeterministic(t *testing.T) {
	ref := func(s string) adminapi.ServiceRef { return adminapi.ServiceRef{Service: s, Namespace: "shop"} }
	nodes := []adminapi.GraphNode{{ServiceRef: ref("payments")}, {ServiceRef: ref("frontend")}, {ServiceRef: ref("catalog")}, {ServiceRef: ref("db")}}
	edges := func() []edgeView {
		return []edgeView{
			{GraphEdge: adminapi.GraphEdge{Source: ref("frontend"), Destination: ref("catalog")}},
			{GraphEdge: adminapi.GraphEdge{Source: ref("catalog"), Destination: ref("db")}},
			{GraphEdge: adminapi.GraphEdge{Source: ref("frontend"), Destination: ref("payments")}},
			{GraphEdge: adminapi.GraphEdge{Source: ref("db"), Destination: ref("catalog")}}, // a cycle
		}
	}
	e1 := edges()
	got, w, h := layout(nodes, e1)
	col := map[string]int{}
	for _, n := range got {
		col[n.Service] = (n.X - margin) / (nodeW + colGap)
	}
	for svc, want := range map[string]int{"frontend": 0, "catalog": 1, "payments": 1} {
		if col[svc] != want {
			t.Errorf("%s in column %d, want %d (columns %v)", svc, col[svc], want, col)
		}
	}
	if col["db"] <= col["catalog"] {
		t.Errorf("db (called by catalog) in column %d, catalog in %d", col["db"], col["catalog"])
	}
	if w <= 0 || h <= 0 {
		t.Fatalf("size %dx%d", w, h)
	}
	// Shuffled input draws the same picture.
	e2 := edges()
	e2[0], e2[2] = e2[2], e2[0]
	got2, _, _ := layout([]adminapi.GraphNode{nodes[3], nodes[2], nodes[1], nodes[0]}, e2)
	for i := range got {
		if got[i].ID != got2[i].ID || got[i].X != got2[i].X || got[i].Y != got2[i].Y {
			t.Fatalf("layout differs with input order: %+v vs %+v", got[i], got2[i])
		}
	}
	for _, e := range e1 {
		if e.Path == "" {
			t.Errorf("edge %s has no path", edgeID(e.GraphEdge))
		}
	}
}

func TestSessionsExpire(t *testing.T) {
	now := time.Unix(1000, 0)
	s := &sessions{m: map[string]*session{}, now: func() time.Time { return now }, ttl: time.Hour}
	ss := s.create(adminauth.RootPrincipal())
	if got, _ := s.get(ss.id); got != ss {
		t.Fatal("new session not found")
	}
	if ss.csrfOK("") || ss.csrfOK(ss.id) || !ss.csrfOK(ss.csrf) {
		t.Error("csrfOK accepts only the session's token")
	}
	now = now.Add(time.Hour)
	if got, expired := s.get(ss.id); got != nil || !expired {
		t.Errorf("after the ttl: %v, expired %v", got, expired)
	}
	if got, expired := s.get(ss.id); got != nil || expired {
		t.Errorf("an expired session is forgotten: %v, expired %v", got, expired)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/proxies":           "/ui/proxies",
		"/ui/graph?edge=a->b":   "/ui/graph?edge=a->b",
		"https://evil.example/": "/ui/graph",
		"//evil.example/ui/":    "/ui/graph",
		"/ui/\\evil":            "/ui/graph",
		"":                      "/ui/graph",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
