package cli_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// routeMesh is a control plane with catalog, catalog-v2 and a slow
// catalog-shadow (each app answers its name), and frontend calling
// catalog.
type routeMesh struct {
	*mesh
	front    *proxy.Proxy
	client   *http.Client
	shadowed atomic.Int64 // requests catalog-shadow received
	payloads atomic.Int64 // of them, POSTs with the body "payload"
}

func startRouteMesh(t *testing.T) *routeMesh {
	m := &routeMesh{mesh: startMesh(t)}
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	app := func(name string, delay time.Duration) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if delay > 0 {
				m.shadowed.Add(1)
				if b, _ := io.ReadAll(r.Body); r.Method == "POST" && string(b) == "payload" {
					m.payloads.Add(1)
				}
				time.Sleep(delay)
			}
			w.Header().Set("Server", "app")
			io.WriteString(w, name)
		}))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	for _, svc := range []struct {
		name  string
		delay time.Duration
	}{{"catalog", 0}, {"catalog-v2", 0}, {"catalog-shadow", time.Second}} {
		meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: svc.name, AppAddr: app(svc.name, svc.delay)})
	}
	m.front = meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend",
		Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	m.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	return m
}

// get calls catalog through frontend: status, body, response header.
func (m *routeMesh) get(t *testing.T, path string, h http.Header) (int, string, http.Header) {
	req, _ := http.NewRequest("GET", "http://"+m.front.UpstreamAddr(0)+path, nil)
	if h != nil {
		req.Header = h
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), resp.Header
}

// apply applies a Route and waits until a call to path says want.
func (m *routeMesh) apply(t *testing.T, route, path, want string) {
	t.Helper()
	m.mustRun(t, route, "apply", "-f", "-")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, body, _ := m.get(t, path, nil); body == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Route never took effect: %s does not answer %q", path, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const routeSplit = `apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: catalog-canary, namespace: shop}
spec:
  service: catalog
  rules:
  - matches: [{path: {prefix: /items}, headers: {x-canary: "1"}}]
    backends: [{service: catalog-v2, weight: 100}]
  - matches: [{path: {exact: /probe}}]
    backends: [{service: catalog-v2}]
  - matches: [{path: {prefix: /flaky}}]
    fault: {abort: {status: 503, percent: 20}}
  - matches: [{path: {prefix: /slow}}]
    fault: {delay: {fixed: 40ms, percent: 100}}
  - matches: [{path: {prefix: /rewrite}}]
    headers: {request: {set: {x-route: canary}}, response: {set: {x-routed: "yes"}, remove: [server]}}
    fault: {delay: {fixed: 40ms, percent: 100}}
  - backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}]
`

// routeEvents sums frontend's trellis_route_events_total lines that hold
// every one of labels (such as `event="aborted"`).
func (m *routeMesh) routeEvents(t *testing.T, labels ...string) int {
	t.Helper()
	resp, err := http.Get("http://" + m.front.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "trellis_route_events_total{") || slices.ContainsFunc(labels, func(s string) bool { return !strings.Contains(l, s) }) {
			continue
		}
		v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		n += int(v)
	}
	return n
}

// The issue's Route through real proxies over HTTP/1.1: a 90/10 split,
// a header match, fault abort and delay, and a slow mirror that costs
// the caller nothing.
func TestRouteThroughProxies(t *testing.T) {
	m := startRouteMesh(t)
	m.apply(t, routeSplit, "/probe", "catalog-v2")

	// 90/10 over 10,000 requests from 8 callers.
	const n = 10000
	var v2, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				code, body, _ := m.get(t, "/items/1", nil)
				switch {
				case code != 200:
					failed.Add(1)
				case body == "catalog-v2":
					v2.Add(1)
				case body != "catalog":
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	pct := float64(v2.Load()) * 100 / n
	t.Logf("split: %d requests, catalog-v2 %.2f%%, failures %d", n, pct, failed.Load())
	if failed.Load() != 0 || pct < 8 || pct > 12 {
		t.Errorf("%d requests: %.2f%% to catalog-v2 (want 10 ± 2), %d failures (want 0)", n, pct, failed.Load())
	}

	// x-canary: 1 on /items always goes to v2.
	for range 500 {
		if code, body, _ := m.get(t, "/items/7", http.Header{"X-Canary": {"1"}}); code != 200 || body != "catalog-v2" {
			t.Fatalf("x-canary: 1: %d %q, want 200 catalog-v2", code, body)
		}
	}

	// Abort 20% with 503: binomial(2000, 0.2) is 400 ± 18; allow 5 sd.
	aborted := 0
	for range 2000 {
		code, body, h := m.get(t, "/flaky", nil)
		switch {
		case code == 503 && h.Get("X-Trellis-Fault") == "abort":
			aborted++
		case code != 200 || (body != "catalog" && body != "catalog-v2"):
			t.Fatalf("/flaky: %d %q", code, body)
		}
	}
	t.Logf("abort: %d of 2000 aborted (20%% configured)", aborted)
	if aborted < 310 || aborted > 490 {
		t.Errorf("abort 20%%: %d of 2000, want 310 to 490", aborted)
	}
	if got := m.routeEvents(t, `event="aborted"`, `route="shop/catalog-canary"`, `rule="2"`, `destination_service="catalog"`); got != aborted {
		t.Errorf("trellis_route_events_total aborted: %d, want %d", got, aborted)
	}
	if got := m.routeEvents(t, `event="hit"`, `rule="2"`); got != 2000 {
		t.Errorf("trellis_route_events_total hits of rule 2: %d, want 2000", got)
	}

	// A 40 ms delay on every /slow request.
	for range 10 {
		began := time.Now()
		if code, _, _ := m.get(t, "/slow", nil); code != 200 {
			t.Fatalf("/slow: %d", code)
		}
		if d := time.Since(began); d < 40*time.Millisecond {
			t.Errorf("/slow took %s, want at least the 40ms delay", d)
		}
	}

	// The HTTP forward proxy (net/http) applies the Route too.
	viaProxy := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.front.HTTPProxyAddr()})}}
	for range 100 {
		req, _ := http.NewRequest("GET", "http://catalog.shop/items/3", nil)
		req.Header.Set("X-Canary", "1")
		resp, err := viaProxy.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "catalog-v2" {
			t.Fatalf("through the HTTP proxy with x-canary: 1: %d %q, want catalog-v2", resp.StatusCode, b)
		}
	}

	// Header rewrites both ways and a delay (net/http serves this
	// Route's requests).
	began := time.Now()
	if code, _, h := m.get(t, "/rewrite", nil); code != 200 || h.Get("X-Routed") != "yes" || h.Get("Server") != "" {
		t.Errorf("/rewrite: %d, header %v: want X-Routed: yes and no Server", code, h)
	}
	if d := time.Since(began); d < 40*time.Millisecond {
		t.Errorf("/rewrite took %s, want at least the 40ms delay", d)
	}
}

// latencies measures n sequential calls: p50 and p99.
func (m *routeMesh) latencies(t *testing.T, n int) (p50, p99 time.Duration) {
	ds := make([]time.Duration, n)
	for i := range ds {
		began := time.Now()
		if code, _, _ := m.get(t, "/items/1", nil); code != 200 {
			t.Fatalf("call %d: %d", i, code)
		}
		ds[i] = time.Since(began)
	}
	slices.Sort(ds)
	return ds[n/2], ds[n*99/100]
}

// A mirror whose target takes 1 s does not slow the caller, and gets its
// copies (as many as the in-flight bound lets out).
func TestRouteMirrorThroughProxies(t *testing.T) {
	m := startRouteMesh(t)
	m.apply(t, routeSplit, "/probe", "catalog-v2")
	const n = 400
	p50, p99 := m.latencies(t, n)
	mirrored := strings.Replace(routeSplit, "  - backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}]\n",
		"  - backends: [{service: catalog, weight: 90}, {service: catalog-v2, weight: 10}]\n    mirror: {service: catalog-shadow, percent: 100}\n", 1)
	mirrored = strings.Replace(mirrored, "exact: /probe", "exact: /probe2", 1)
	m.apply(t, mirrored, "/probe2", "catalog-v2")
	deadline := time.Now().Add(10 * time.Second)
	for m.shadowed.Load() == 0 {
		m.get(t, "/items/1", nil)
		if time.Now().After(deadline) {
			t.Fatal("catalog-shadow got no copy within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond) // the first copies end
	before := m.shadowed.Load()
	mp50, mp99 := m.latencies(t, n)
	t.Logf("%d calls each: without mirror p50 %s p99 %s; with a 1 s mirror p50 %s p99 %s", n, p50, p99, mp50, mp99)
	if mp50 > p50+2*time.Millisecond+p50/2 || mp99 > p99+10*time.Millisecond+p99/2 {
		t.Errorf("the mirror slowed the caller: p50 %s → %s, p99 %s → %s", p50, mp50, p99, mp99)
	}
	time.Sleep(1100 * time.Millisecond)
	got := m.shadowed.Load() - before
	t.Logf("catalog-shadow received %d copies of %d calls (at most 64 in flight)", got, n)
	if got < 32 || got > n {
		t.Errorf("catalog-shadow received %d copies of %d calls, want 32 to %d", got, n, n)
	}
	// Small bodies are copied too (a Content-Length body that arrived
	// with the head).
	for range 5 {
		resp, err := m.client.Post("http://"+m.front.UpstreamAddr(0)+"/items/1", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "catalog") {
			t.Fatalf("POST: %d %q", resp.StatusCode, b)
		}
	}
	testutil.EventuallyWithin(t, 5*time.Second, "catalog-shadow gets the POST bodies", func() bool { return m.payloads.Load() == 5 })
	time.Sleep(1100 * time.Millisecond)
	// Every copy sent arrived; the rest were skipped and counted.
	sent, skipped := m.routeEvents(t, `event="mirrored"`), m.routeEvents(t, `event="mirror_skipped"`)
	t.Logf("mirrored %d, skipped %d (counters); received %d in all", sent, skipped, m.shadowed.Load())
	if int64(sent) != m.shadowed.Load() {
		t.Errorf("trellis_route_events_total mirrored %d, but catalog-shadow received %d", sent, m.shadowed.Load())
	}
}

// The same split and an injected gRPC abort for a gRPC service.
func TestRouteGRPCThroughProxies(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	grpcApp := func(st healthpb.HealthCheckResponse_ServingStatus) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus("", st)
		healthpb.RegisterHealthServer(srv, hs)
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(srv.Stop)
		return l.Addr().String()
	}
	// v1 says SERVING, v2 NOT_SERVING: the answer tells who served.
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders", Protocol: "grpc", AppAddr: grpcApp(healthpb.HealthCheckResponse_SERVING)})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders-v2", Protocol: "grpc", AppAddr: grpcApp(healthpb.HealthCheckResponse_NOT_SERVING)})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend",
		Upstreams: []proxy.Upstream{{Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	m.mustRun(t, `apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: orders-canary, namespace: shop}
spec:
  service: orders
  rules:
  - matches: [{grpc: {service: grpc.health.v1.Health, method: Check}, headers: {x-fault: "1"}}]
    fault: {abort: {grpcStatus: 14, percent: 100}}
  - matches: [{grpc: {service: grpc.health.v1.Health}, headers: {x-canary: "1"}}]
    backends: [{service: orders-v2}]
    headers: {response: {set: {x-routed: v2}}}
  - backends: [{service: orders, weight: 90}, {service: orders-v2, weight: 10}]
`, "apply", "-f", "-")
	cc, err := grpc.NewClient("passthrough:///"+front.UpstreamAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	check := func(md ...string) (healthpb.HealthCheckResponse_ServingStatus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := hc.Check(metadata.AppendToOutgoingContext(ctx, md...), &healthpb.HealthCheckRequest{})
		return resp.GetStatus(), err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err := check("x-canary", "1"); err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Route never took effect for gRPC")
		}
		time.Sleep(50 * time.Millisecond)
	}
	const n = 10000
	var v2, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				st, err := check()
				switch {
				case err != nil:
					failed.Add(1)
				case st == healthpb.HealthCheckResponse_NOT_SERVING:
					v2.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	pct := float64(v2.Load()) * 100 / n
	t.Logf("gRPC split: %d calls, orders-v2 %.2f%%, failures %d", n, pct, failed.Load())
	if failed.Load() != 0 || pct < 8 || pct > 12 {
		t.Errorf("%d calls: %.2f%% to orders-v2 (want 10 ± 2), %d failures (want 0)", n, pct, failed.Load())
	}
	for range 200 {
		if st, err := check("x-canary", "1"); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("x-canary: 1: %v %v, want NOT_SERVING from orders-v2", st, err)
		}
	}
	// The response rewrite on the HTTP/2 relay.
	var hdr metadata.MD
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-canary", "1"), 5*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr)); err != nil || len(hdr.Get("x-routed")) != 1 || hdr.Get("x-routed")[0] != "v2" {
		t.Errorf("response rewrite: header %v, err %v: want x-routed: v2", hdr, err)
	}
	if _, err := check("x-fault", "1"); status.Code(err) != codes.Unavailable {
		t.Errorf("injected abort: %v, want UNAVAILABLE", err)
	}
}

// trellis route check against the live Routes and TrafficPolicies.
func TestRouteCheck(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, routeSplit+`---
apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: orders-faults, namespace: shop}
spec:
  service: orders
  rules:
  - matches: [{grpc: {service: shop.Orders, method: Create}}]
    backends: [{service: orders, weight: 90}, {service: orders-v2, weight: 10}]
    mirror: {service: orders-shadow, percent: 50}
    fault: {delay: {fixed: 100ms, percent: 5}, abort: {status: 503, grpcStatus: 14, percent: 1}}
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: catalog-v2, namespace: shop}
spec: {selector: {service: catalog-v2}, timeout: 2s, retries: {attempts: 3, on: [5xx]}, outlierDetection: {consecutive5xx: 5}, loadBalancer: {policy: round-robin}}
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: default, namespace: shop}
spec: {timeout: 10s}
`, "apply", "-f", "-")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--from", "frontend.shop", "--to", "catalog.shop", "--path", "/items/1"}, []string{
			"frontend.shop → catalog.shop: GET /items/1",
			"route:    shop/catalog-canary rule 5",
			"  catalog.shop                 weight 90    90.00%",
			"    traffic policy: shop/default",
			"    timeout 10s, no retries, lb peak-ewma",
			"  catalog-v2.shop              weight 10    10.00%",
			"    traffic policy: shop/catalog-v2",
			"    timeout 2s, retries 3 on 5xx budget 20%+10/s, outlier detection 5×5xx/0×gateway, eject 30s (max 50%), lb round-robin",
		}},
		{[]string{"--to", "catalog.shop", "--path", "/items/1", "-H", "x-canary=1"}, []string{
			"any caller → catalog.shop: GET /items/1", "route:    shop/catalog-canary rule 0", "catalog-v2.shop              weight 100  100.00%"}},
		{[]string{"--to", "catalog.shop", "--path", "/flaky"}, []string{"rule 2", "abort:    503, 20% of requests", "catalog.shop                 weight 1    100.00%"}},
		{[]string{"--to", "catalog.shop", "--path", "/rewrite"}, []string{"request headers:  set x-route: canary", "response headers: set x-routed: yes; remove server"}},
		{[]string{"--to", "orders.shop", "--method", "post", "--path", "/shop.Orders/Create"}, []string{
			"route:    shop/orders-faults rule 0", "mirror:   orders-shadow.shop, 50% of requests", "delay:    100ms, 5% of requests", "abort:    503 (gRPC status 14), 1% of requests"}},
		{[]string{"--to", "orders.shop", "--path", "/shop.Orders/List"}, []string{"route:    shop/orders-faults, no rule matches (the service itself)", "orders.shop"}},
		{[]string{"--to", "payments.shop"}, []string{"route:    none (the service itself)", "traffic policy: shop/default"}},
	} {
		out := m.mustRun(t, "", append([]string{"route", "check"}, tc.args...)...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("route check %v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
	out := m.mustRun(t, "", "route", "check", "--to", "catalog.shop", "--path", "/items", "-o", "json")
	for _, w := range []string{`"route": "shop/catalog-canary"`, `"rule": 5`, `"percent": 90`, `"trafficPolicy": "shop/catalog-v2"`} {
		if !strings.Contains(out, w) {
			t.Errorf("route check -o json lacks %q:\n%s", w, out)
		}
	}
	for _, args := range [][]string{{"--to", "catalog"}, {"--to", "catalog.shop", "--from", "frontend"}, {"--to", "catalog.shop", "-H", "x"}, {"--to", "catalog.shop", "-o", "yaml"}, {"--to", "catalog.shop", "--path", "items"}} {
		if r := m.run(t, "", append([]string{"route", "check"}, args...)...); r.code != cli.ExitUser || !strings.Contains(r.stderr, "route check: ") {
			t.Errorf("route check %v: %v, want a usage error", args, r)
		}
	}
}

// A service the gateway routes to keeps its Route: on the gateway's
// HTTP/1.1 fast path and on its net/http path (HTTP/2 clients).
func TestRouteThroughGateway(t *testing.T) {
	m := startMesh(t)
	pki := testutil.NewServingPKI(t, t.TempDir())
	cert, key, _ := pki.Issue(t, "catalog", "catalog.example.com")
	m.mustRun(t, shopThroughGateway+`---
apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: catalog-public, namespace: shop}
spec:
  hosts: [catalog.example.com]
  rules:
  - service: catalog
---
apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: catalog-split, namespace: shop}
spec:
  service: catalog
  rules:
  - matches: [{headers: {x-canary: "1"}}]
    backends: [{service: catalog-v2}]
  - matches: [{path: {prefix: /flaky}}]
    fault: {abort: {status: 418, percent: 100}}
  - matches: [{path: {prefix: /rewrite}}]
    headers: {response: {set: {x-routed: "yes"}}}
  - backends: [{service: catalog, weight: 80}, {service: catalog-v2, weight: 20}]
`, "apply", "-f", "-")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: whoApp(t, "catalog")})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog-v2", AppAddr: whoApp(t, "catalog-v2")})
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", Gateway: &proxy.GatewayConfig{
		ListenHTTPS: "127.0.0.1:0", ListenHTTP: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}},
	}})
	plain := gatewayClient(gw.GatewayHTTPAddr(), nil, false)
	h2 := gatewayClient(gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}, true)
	_, httpsPort, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	testutil.EventuallyWithin(t, 15*time.Second, "the Route applies at the gateway", func() bool {
		code, body, _ := getBody(t, plain, "http://catalog.example.com/x", map[string]string{"X-Canary": "1"})
		return code == 200 && strings.HasPrefix(body, "catalog-v2 ")
	})
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{{"h1 fast path", plain, "http://catalog.example.com"}, {"h2 net/http", h2, "https://catalog.example.com:" + httpsPort}} {
		const n = 2000
		v2 := 0
		for range n {
			code, body, _ := getBody(t, c.client, c.url+"/items", nil)
			if code != 200 {
				t.Fatalf("%s: %d %q", c.name, code, body)
			}
			if strings.HasPrefix(body, "catalog-v2 ") {
				v2++
			}
		}
		pct := float64(v2) * 100 / n
		t.Logf("%s: %d requests, catalog-v2 %.2f%%", c.name, n, pct)
		if pct < 16 || pct > 24 { // 20% ± 4.5 sd
			t.Errorf("%s: %.2f%% to catalog-v2, want 20 ± 4", c.name, pct)
		}
		for range 50 {
			if code, body, _ := getBody(t, c.client, c.url+"/items", map[string]string{"X-Canary": "1"}); code != 200 || !strings.HasPrefix(body, "catalog-v2 ") {
				t.Fatalf("%s x-canary: %d %q", c.name, code, body)
			}
		}
		if code, _, h := getBody(t, c.client, c.url+"/flaky", nil); code != 418 || h.Get("X-Trellis-Fault") != "abort" {
			t.Errorf("%s /flaky: %d, want the injected 418", c.name, code)
		}
		if code, _, h := getBody(t, c.client, c.url+"/rewrite", nil); code != 200 || h.Get("X-Routed") != "yes" {
			t.Errorf("%s /rewrite: %d, header %v: want X-Routed: yes", c.name, code, h)
		}
	}
}
