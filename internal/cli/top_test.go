package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestTopCountsDenialsApart: real proxies serve 200s, 500s and policy
// denials; `trellis top` counts a denial as neither a success nor a
// failure, and shows the denial rate.
func TestTopCountsDenialsApart(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/top-policies.yaml")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(app.Close)
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: strings.TrimPrefix(app.URL, "http://"), StatsInterval: time.Second})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", StatsInterval: time.Second,
		Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})

	// seen counts what reached catalog's proxy, by status.
	seen := map[int]int{}
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(path string) int {
		resp, err := client.Get("http://" + front.UpstreamAddr(0) + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK, http.StatusInternalServerError, http.StatusForbidden:
			seen[resp.StatusCode]++
		}
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for call("/items") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("catalog not reachable through frontend within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 200 {
		switch {
		case i%10 < 3:
			call("/admin") // denied: 30%
		case i%10 == 3:
			call("/fail") // 500: 10%
		default:
			call("/items")
		}
	}
	total := seen[200] + seen[500] + seen[403]
	if seen[403] != 60 || seen[500] != 20 {
		t.Fatalf("the client saw %v, want 60 denials and 20 failures", seen)
	}

	var node adminapi.GraphNode
	deadline = time.Now().Add(15 * time.Second)
	for {
		var g adminapi.Graph
		if err := json.Unmarshal([]byte(m.mustRun(t, "", "top", "-o", "json")), &g); err != nil {
			t.Fatal(err)
		}
		for _, n := range g.Nodes {
			if n.ServiceRef == (adminapi.ServiceRef{Service: "catalog", Namespace: "shop"}) {
				node = n
			}
		}
		if node.Requests >= uint64(total) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	wantSuccess := float64(seen[200]) / float64(total)
	wantDenial := float64(seen[403]) / float64(total)
	if node.Requests != uint64(total) || node.Denied != 60 || !near(node.SuccessRate, wantSuccess) || !near(node.DenialRate, wantDenial) {
		t.Fatalf("catalog.shop: got requests %d, denied %d, success %v, denial rate %v; want %d, 60, %.4f, %.4f",
			node.Requests, node.Denied, deref(node.SuccessRate), deref(node.DenialRate), total, wantSuccess, wantDenial)
	}

	// The table: SERVICE PROXIES RPS SUCCESS DENIED P50 P99 MTLS REQUESTS.
	table := m.mustRun(t, "", "top")
	var row []string
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "catalog.shop" {
			row = f
			break
		}
	}
	want := []string{fmt.Sprintf("%.1f%%", wantSuccess*100), fmt.Sprintf("%.1f%%", wantDenial*100), fmt.Sprint(total)}
	if len(row) != 9 || row[3] != want[0] || row[4] != want[1] || row[8] != want[2] {
		t.Errorf("catalog.shop row %q: want SUCCESS %s, DENIED %s, REQUESTS %s\n%s", row, want[0], want[1], want[2], table)
	}
}

func near(p *float64, want float64) bool {
	return p != nil && *p > want-1e-9 && *p < want+1e-9
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestTopTable: the table's cells from a fixed graph served on loopback:
// rates as percentages, a rare denial still visible, "-" without requests.
func TestTopTable(t *testing.T) {
	clearEnv(t)
	f := func(v float64) *float64 { return &v }
	g := adminapi.Graph{
		Window: "1m0s", GeneratedAt: time.Date(2026, 12, 6, 9, 41, 7, 0, time.Local), Proxies: 3,
		Nodes: []adminapi.GraphNode{
			{ServiceRef: adminapi.ServiceRef{Service: "catalog", Namespace: "shop"}, Proxies: 1, Traffic: adminapi.Traffic{
				Requests: 1098, RequestRate: 18.3, SuccessRate: f(0.9), DenialRate: f(61.0 / 1098), LatencyP50Ms: f(0.41), LatencyP99Ms: f(2.1), MTLSShare: f(1), Denied: 61}},
			{ServiceRef: adminapi.ServiceRef{Service: "frontend", Namespace: "shop"}},
			{ServiceRef: adminapi.ServiceRef{Service: "orders", Namespace: "shop"}, Proxies: 1, Traffic: adminapi.Traffic{
				Requests: 20000, RequestRate: 333.3, SuccessRate: f(0.9999), DenialRate: f(1.0 / 20000), LatencyP50Ms: f(0.38), LatencyP99Ms: f(12.4), MTLSShare: f(1), Denied: 1}},
		},
		Edges: []adminapi.GraphEdge{
			{Source: adminapi.ServiceRef{Service: "frontend", Namespace: "shop"}, Destination: adminapi.ServiceRef{Service: "catalog", Namespace: "shop"}, Traffic: adminapi.Traffic{
				Requests: 1098, RequestRate: 18.3, SuccessRate: f(0.9), DenialRate: f(61.0 / 1098), LatencyP50Ms: f(0.41), LatencyP99Ms: f(2.1), MTLSShare: f(1), Denied: 61}},
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != adminapi.PathGraph || r.Header.Get("Authorization") != "Bearer t0k" {
			http.Error(w, `{"error":"unexpected request"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(g)
	}))
	t.Cleanup(srv.Close)
	r := run(t, "", "--api", srv.URL, "--token", "t0k", "top")
	if r.code != cli.ExitOK || r.stderr != "" {
		t.Fatalf("got %v, want exit 0", r)
	}
	testutil.Golden(t, "top.golden", r.stdout)
}
