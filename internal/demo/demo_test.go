package demo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
)

// startDemo starts the demo on a random base port, retrying when a port
// is taken.
func startDemo(t *testing.T) *Mesh {
	t.Helper()
	var lastErr error
	for range 5 {
		base := 20000 + rand.IntN(400)*100
		m, err := Start(context.Background(), Options{BasePort: base, TrafficInterval: 50 * time.Millisecond, Logger: testutil.Logger(t)})
		if err == nil {
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := m.Stop(ctx); err != nil {
					t.Errorf("stop demo: %v", err)
				}
			})
			return m
		}
		lastErr = err
	}
	t.Fatalf("start demo: %v", lastErr)
	return nil
}

func TestDemoMesh(t *testing.T) {
	m := startDemo(t)
	resp, err := http.Get(m.Frontend)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Catalog  map[string]any `json:"catalog"`
		Payments map[string]any `json:"payments"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("frontend answered %s: %v", body, err)
	}
	const frontendID = "spiffe://trellis.local/ns/shop/sa/frontend"
	if got.Catalog["caller"] != frontendID || got.Payments["caller"] != frontendID {
		t.Errorf("catalog and payments saw callers %v and %v, want %s (over mTLS)", got.Catalog["caller"], got.Payments["caller"], frontendID)
	}
	// The traffic generator runs and its calls succeed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, fail := m.Traffic()
		if ok >= 3 {
			if fail > 0 {
				t.Errorf("traffic generator: %d ok, %d failed", ok, fail)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic generator: %d ok, %d failed after 5s", ok, fail)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The service graph (what `trellis top` shows) has the demo's edges.
	client, err := m.adminClient()
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		g, err := client.Graph(context.Background(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		edges := map[string]uint64{}
		for _, e := range g.Edges {
			edges[e.Source.Service+"->"+e.Destination.Service] = e.Requests
		}
		// catalog-v2 gets the canary's 10% (the Route catalog-canary).
		if edges["frontend->catalog"] > 0 && edges["frontend->payments"] > 0 && edges["frontend->catalog-v2"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service graph after 10s has edges %v, want frontend->catalog, frontend->catalog-v2 and frontend->payments", edges)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// catalog answers every 10th request 503; the frontend's proxy
	// retried them (TrafficPolicy catalog), so the generator saw none.
	testutil.EventuallyWithin(t, 10*time.Second, "the frontend's proxy retried catalog's 503s", func() bool {
		resp, err := http.Get("http://" + m.Proxies["frontend"].AdminAddr() + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), `trellis_retries_total{destination_namespace="shop",destination_service="catalog"}`)
	})
	if ok, fail := m.Traffic(); fail > 0 {
		t.Errorf("traffic generator: %d ok, %d failed: retries should hide catalog's 503s", ok, fail)
	}
	// The viewer token the banner prints reads, and may not apply; the
	// console answers at ConsoleURL.
	viewer, err := adminapi.NewClient(m.Control.APIURL(), m.ViewerToken, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.ListProxies(context.Background(), ""); err != nil {
		t.Errorf("viewer token lists proxies: %v", err)
	}
	var se *adminapi.StatusError
	if _, err := viewer.Apply(context.Background(), []resource.Object{resource.DefaultMesh()}, true); !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Errorf("viewer token applies: %v, want 403", err)
	}
	if resp, err := http.Get(m.ConsoleURL + "login"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %slogin: %v %v", m.ConsoleURL, resp, err)
	} else {
		resp.Body.Close()
	}
	// Every proxy serves /ready and metrics.
	for name, p := range m.Proxies {
		resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "trellis_certificate_expiry_timestamp_seconds") {
			t.Errorf("%s metrics lack the certificate expiry", name)
		}
	}
}

// The demo's edge: curl through the gateway with the admin's token gets
// frontend's answer; the user's token and none get 403.
func TestDemoGatewayWithJWT(t *testing.T) {
	m := startDemo(t)
	e := m.Edge
	if e == nil {
		t.Fatal("the demo has no gateway")
	}
	_, port, _ := net.SplitHostPort(e.Addr)
	curl := func(tokenFile string) string {
		args := []string{"-sS", "--cacert", e.CAFile, "--resolve", DemoHost + ":" + port + ":127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}", e.URL}
		if tokenFile != "" {
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "-H", "Authorization: Bearer "+strings.TrimSpace(string(tok)))
		}
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		return string(out)
	}
	testutil.EventuallyWithin(t, 15*time.Second, "the admin's request through the gateway passes", func() bool { return curl(e.AdminToken) == "200" })
	for i := range 20 {
		if got := curl(e.AdminToken); got != "200" {
			t.Fatalf("admin %d: %s", i, got)
		}
		if got := curl(e.UserToken); got != "403" {
			t.Fatalf("user %d: %s", i, got)
		}
		if got := curl(""); got != "403" {
			t.Fatalf("no token %d: %s", i, got)
		}
	}
}
