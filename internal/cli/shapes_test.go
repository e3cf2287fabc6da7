package cli_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// Request shapes learned from real traffic: the proxies template the
// paths of hundreds of requests (numeric ids, UUIDs), count them per
// caller with denials, and the collector serves the shapes per edge.
func TestShapesLearnedFromTraffic(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	m.mustRun(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: shop}\nspec:\n  selector: {service: catalog}\n  action: DENY\n  rules: [{to: [{paths: [\"/admin\"]}]}]\n", "apply", "-f", "-")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(app.Close)
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: strings.TrimPrefix(app.URL, "http://"), StatsInterval: time.Second})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend",
		Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(method, path string) int {
		req, _ := http.NewRequest(method, "http://"+front.UpstreamAddr(0)+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for call("GET", "/health") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("catalog not reachable through frontend within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Until catalog's proxy has frontend in its configuration, frontend's
	// calls count as from "unknown" (as in trellis_requests_total): wait
	// until a probe is reported as frontend's.
	frontendEdge := func() (adminapi.EdgeShapes, bool) {
		list, err := m.client.Shapes(context.Background(), "shop")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Edges {
			if e.SourceService == "frontend" && e.Service == "catalog" {
				return e, true
			}
		}
		return adminapi.EdgeShapes{}, false
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		call("GET", "/health")
		if _, ok := frontendEdge(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no shapes of the frontend -> catalog edge within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := map[string]uint64{}
	expect := func(method, tmpl string, code, got int) {
		t.Helper()
		if got != code {
			t.Fatalf("%s %s: got %d, want %d", method, tmpl, got, code)
		}
		want[method+" "+tmpl]++
	}
	for i := range 300 {
		expect("GET", "/items/{id}", 200, call("GET", fmt.Sprintf("/items/%d", 1000+i)))
		if i%3 == 0 {
			expect("GET", "/users/{id}/cart", 200, call("GET", fmt.Sprintf("/users/%08x-4f89-11d3-9a0c-0305e82c3301/cart", i)))
		}
		if i%5 == 0 {
			expect("POST", "/items", 200, call("POST", "/items"))
			expect("GET", "/admin", 403, call("GET", "/admin"))
		}
	}

	var edge adminapi.EdgeShapes
	deadline = time.Now().Add(20 * time.Second)
	for {
		e, _ := frontendEdge()
		edge = e
		got := map[string]uint64{}
		for _, s := range e.Shapes {
			got[s.Method+" "+s.Template] = s.Requests
		}
		done := true
		for k, n := range want {
			if got[k] < n {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("frontend -> catalog shapes after 20s: %+v\nwant at least %v", e, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, s := range edge.Shapes {
		k := s.Method + " " + s.Template
		if k == "GET /health" {
			continue // the readiness probe's calls
		}
		if s.Requests != want[k] {
			t.Errorf("shape %s: %d requests, want exactly %d", k, s.Requests, want[k])
		}
		if k == "GET /admin" && s.Denied != want[k] {
			t.Errorf("GET /admin: %d denied, want %d", s.Denied, want[k])
		}
		if s.FirstSeen.IsZero() || s.LastSeen.Before(s.FirstSeen) {
			t.Errorf("shape %s: first %v last %v", k, s.FirstSeen, s.LastSeen)
		}
	}
	if edge.Overflow != 0 || len(edge.Shapes) != len(want)+1 {
		t.Errorf("edge %+v: want %d shapes (and GET /health), no overflow", edge, len(want))
	}
}
