package cli_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// A RateLimit through real proxies: per caller identity, a burst passes,
// the rest gets 429 with Retry-After and is counted; another caller has
// its own bucket; the bucket refills at the rate.
func TestRateLimitPerCallerThroughProxies(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	m.mustRun(t, "apiVersion: trellis.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: catalog-5rps, namespace: shop}\nspec: {selector: {service: catalog}, requestsPerSecond: 5}\n", "apply", "-f", "-")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(app.Close)
	cat := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: strings.TrimPrefix(app.URL, "http://")})
	up := []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: up})
	batch := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "batch", Upstreams: up})
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(p *proxy.Proxy) (int, string) {
		resp, err := client.Get("http://" + p.UpstreamAddr(0) + "/items")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	// Wait for the limit to be in force (a 429 after enough calls), then
	// for a full bucket again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		limited := false
		for range 10 {
			if c, _ := call(batch); c == http.StatusTooManyRequests {
				limited = true
			}
		}
		if limited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no 429 within 15s: the RateLimit never reached the proxy")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond)
	codes := map[int]int{}
	began := time.Now()
	for range 20 {
		c, ra := call(front)
		codes[c]++
		if c == http.StatusTooManyRequests && ra != "1" {
			t.Errorf("429 with Retry-After %q, want 1", ra)
		}
	}
	// The burst, plus what refilled while the calls ran (5 a second).
	most := 5 + int(time.Since(began).Seconds()*5) + 1
	if codes[200] < 5 || codes[200] > most || codes[429] != 20-codes[200] || codes[429] == 0 {
		t.Fatalf("20 calls from frontend at 5/s in %s: %v, want 5 to %d passed and the rest 429", time.Since(began), codes, most)
	}
	// batch's bucket is its own: full after a second.
	time.Sleep(1100 * time.Millisecond)
	if c, _ := call(batch); c != 200 {
		t.Errorf("another caller after a second: %d, want 200", c)
	}
	// The bucket refills at 5/s.
	time.Sleep(1100 * time.Millisecond)
	ok := 0
	began = time.Now()
	for range 10 {
		if c, _ := call(front); c == 200 {
			ok++
		}
	}
	if most := 5 + int(time.Since(began).Seconds()*5) + 1; ok < 5 || ok > most {
		t.Errorf("after a second: %d of 10 passed, want 5 to %d", ok, most)
	}
	resp, err := http.Get("http://" + cat.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `trellis_inbound_refused_requests_total{reason="rate_limited"}`) {
		t.Error("no rate_limited refusals in catalog's metrics")
	}
}
