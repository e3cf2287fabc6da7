package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/jaegertest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
	"github.com/trellismesh/trellis/internal/tracing"
)

const (
	frontendID = "spiffe://trellis.local/ns/shop/sa/frontend"
	catalogID  = "spiffe://trellis.local/ns/shop/sa/catalog"
	ordersID   = "spiffe://trellis.local/ns/shop/sa/orders"
)

// tracingMesh is frontend calling catalog (HTTP/1.1) and orders (gRPC)
// through two real proxies each, exporting spans to a real Jaeger.
type tracingMesh struct {
	j          *jaegertest.Jaeger
	cp         *meshtest.ControlPlane
	catalogUp  string // frontend's upstream listener for catalog
	ordersUp   string // and for orders
	hc         *http.Client
	mu         sync.Mutex
	appHeaders http.Header // what catalog's app received last
}

func (m *tracingMesh) mesh(pct string) string {
	return fmt.Sprintf(`apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  extensionProviders:
  - name: jaeger
    opentelemetry: {service: %s, port: %d}
  tracing: {provider: jaeger, randomSamplingPercentage: %s}
`, m.j.OTLPHost, m.j.OTLPPort, pct)
}

func startTracingMesh(t *testing.T) *tracingMesh {
	m := &tracingMesh{j: jaegertest.Start(t), hc: &http.Client{Timeout: 5 * time.Second}}
	m.cp = meshtest.StartControlPlane(t, controlplane.Config{})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		m.mu.Lock()
		m.appHeaders = r.Header.Clone()
		m.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)

	meshtest.StartProxy(t, m.cp, proxy.Config{Service: "catalog", AppAddr: app})
	meshtest.StartProxy(t, m.cp, proxy.Config{Service: "orders", Protocol: "grpc", AppAddr: l.Addr().String()})
	fe := meshtest.StartProxy(t, m.cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{
		{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"},
		{Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"},
	}})
	m.catalogUp, m.ordersUp = fe.UpstreamAddr(0), fe.UpstreamAddr(1)
	meshtest.MustApply(t, m.cp, m.mesh("100")+`---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["`+frontendID+`"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-orders, namespace: shop}
spec:
  selector: {service: orders}
  rules:
  - from: [{principals: ["`+frontendID+`"]}]
`)
	// The Mesh reaches the proxies asynchronously: wait for a sampled
	// traceparent at the app.
	jaegertest.Await(t, 10*time.Second, "tracing on at both proxies", func() bool {
		h, code := m.get(t, "/items")
		return code == 200 && strings.HasSuffix(h.Get("Traceparent"), "-01")
	})
	return m
}

// get calls catalog through frontend and returns what the app received.
func (m *tracingMesh) get(t *testing.T, path string, header ...string) (http.Header, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+m.catalogUp+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return m.do(t, req)
}

func (m *tracingMesh) do(t *testing.T, req *http.Request) (http.Header, int) {
	t.Helper()
	m.mu.Lock()
	m.appHeaders = nil
	m.mu.Unlock()
	resp, err := m.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.appHeaders, resp.StatusCode
}

// awaitTrace waits until Jaeger has the trace with n spans.
func (m *tracingMesh) awaitTrace(t *testing.T, id string, n int) *jaegertest.Trace {
	t.Helper()
	var tr *jaegertest.Trace
	jaegertest.Await(t, 15*time.Second, fmt.Sprintf("trace %s with %d spans in jaeger", id, n), func() bool {
		tr = m.j.Trace(t, id)
		return tr != nil && len(tr.Spans) >= n
	})
	if len(tr.Spans) != n {
		t.Fatalf("trace %s: got %d spans, want %d: %+v", id, len(tr.Spans), n, tr.Spans)
	}
	return tr
}

// hop checks a trace of one request through frontend's and the
// callee's proxies: a client span at frontend (parent: wantParent, or
// none), a server span at the callee, child of the client span, with
// their attributes; it returns the server span's id.
func hop(t *testing.T, tr *jaegertest.Trace, svc, calleeID, wantParent string, tags map[string]string) string {
	t.Helper()
	var client, server *jaegertest.Span
	for i := range tr.Spans {
		s := &tr.Spans[i]
		switch s.OperationName {
		case "outbound " + svc:
			client = s
		case "inbound " + svc:
			server = s
		}
	}
	if client == nil || server == nil {
		t.Fatalf("trace %s: want spans %q and %q, got %+v", tr.TraceID, "outbound "+svc, "inbound "+svc, tr.Spans)
	}
	if got, want := tr.Processes[client.ProcessID].ServiceName, "frontend.shop"; got != want {
		t.Errorf("client span's service: got %q, want %q", got, want)
	}
	if got, want := tr.Processes[server.ProcessID].ServiceName, svc; got != want {
		t.Errorf("server span's service: got %q, want %q", got, want)
	}
	if got := client.Parent(); got != wantParent {
		t.Errorf("client span's parent: got %q, want %q", got, wantParent)
	}
	if got, want := server.Parent(), client.SpanID; got != want {
		t.Errorf("server span's parent: got %q, want the client span %q", got, want)
	}
	check := func(s *jaegertest.Span, key, want string) {
		t.Helper()
		if got, ok := s.Tag(key); !ok || got != want {
			t.Errorf("%s: tag %s: got %q (present %v), want %q", s.OperationName, key, got, ok, want)
		}
	}
	check(client, tracing.AttrSource, frontendID)
	check(client, tracing.AttrDestination, calleeID)
	check(client, tracing.AttrService, svc)
	check(server, tracing.AttrSource, frontendID)
	check(server, tracing.AttrDestination, calleeID)
	for k, v := range tags {
		check(server, k, v)
	}
	return server.SpanID
}

func TestTracingThroughProxiesToJaeger(t *testing.T) {
	m := startTracingMesh(t)
	allow := map[string]string{tracing.AttrDecision: "allow", tracing.AttrPolicy: "shop/frontend-reads", "http.response.status_code": "200"}

	t.Run("root", func(t *testing.T) {
		h, code := m.get(t, "/items")
		tp := h.Get("Traceparent")
		if code != 200 || len(tp) != 55 || !strings.HasSuffix(tp, "-01") {
			t.Fatalf("got %d, app's traceparent %q; want 200 and a sampled traceparent", code, tp)
		}
		tr := m.awaitTrace(t, tp[3:35], 2)
		server := hop(t, tr, "catalog.shop", catalogID, "", allow)
		if got := tp[36:52]; got != server {
			t.Errorf("app's parent span: got %s, want the inbound's span %s", got, server)
		}
	})

	t.Run("caller traceparent continued", func(t *testing.T) {
		const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		h, _ := m.get(t, "/items/7", "Traceparent", "00-"+tid+"-"+sid+"-01", "Tracestate", "vendor=x")
		if got := h.Get("Traceparent"); !strings.HasPrefix(got, "00-"+tid+"-") {
			t.Errorf("app's traceparent: got %q, want trace %s", got, tid)
		}
		if got := h.Get("Tracestate"); got != "vendor=x" {
			t.Errorf("app's tracestate: got %q, want it unchanged", got)
		}
		hop(t, m.awaitTrace(t, tid, 2), "catalog.shop", catalogID, sid, allow)
	})

	t.Run("b3 caller", func(t *testing.T) {
		const tid, sid = "a3ce929d0e0e47364bf92f3577b34da6", "b7ad6b7169203331"
		h, _ := m.get(t, "/items", "X-B3-TraceId", tid, "X-B3-SpanId", sid, "X-B3-Sampled", "1")
		if got := h.Get("B3"); !strings.HasPrefix(got, tid+"-") || !strings.HasSuffix(got, "-1") {
			t.Errorf("app's b3: got %q, want trace %s sampled", got, tid)
		}
		if got := h.Get("X-B3-Spanid"); got != "" {
			t.Errorf("app's x-b3-spanid: got %q, want it replaced by b3", got)
		}
		hop(t, m.awaitTrace(t, tid, 2), "catalog.shop", catalogID, sid, allow)
	})

	t.Run("net/http path", func(t *testing.T) {
		// Expect: 100-continue leaves the fast path on both sides.
		const tid, sid = "11111111111111112222222222222222", "3333333333333333"
		req, _ := http.NewRequest("POST", "http://"+m.catalogUp+"/items", bytes.NewReader([]byte("body")))
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
		if _, code := m.do(t, req); code != 200 {
			t.Fatalf("got %d, want 200", code)
		}
		hop(t, m.awaitTrace(t, tid, 2), "catalog.shop", catalogID, sid, allow)
	})

	t.Run("grpc", func(t *testing.T) {
		cc, err := grpc.NewClient("passthrough:///"+m.ordersUp, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		const tid, sid = "99999999999999998888888888888888", "7777777777777777"
		ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+tid+"-"+sid+"-01")
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"}); err != nil {
			t.Fatal(err)
		}
		hop(t, m.awaitTrace(t, tid, 2), "orders.shop", ordersID, sid, map[string]string{
			tracing.AttrDecision: "allow", tracing.AttrPolicy: "shop/frontend-orders", "rpc.grpc.status_code": "0",
		})
	})

	t.Run("unsampled parent", func(t *testing.T) {
		const tid, sid = "5555555555555555aaaaaaaaaaaaaaaa", "6666666666666666"
		tp := "00-" + tid + "-" + sid + "-00"
		h, _ := m.get(t, "/items", "Traceparent", tp)
		if got := h.Get("Traceparent"); got != tp {
			t.Errorf("app's traceparent: got %q, want the caller's unchanged %q", got, tp)
		}
		// A sampled request after it: once its trace is in Jaeger, the
		// proxies' batches holding anything of the first were exported.
		const after = "5555555555555555bbbbbbbbbbbbbbbb"
		m.get(t, "/items", "Traceparent", "00-"+after+"-"+sid+"-01")
		m.awaitTrace(t, after, 2)
		time.Sleep(2 * tracing.BatchTimeout)
		if tr := m.j.Trace(t, tid); tr != nil {
			t.Errorf("unsampled trace %s: got %d spans in jaeger, want none", tid, len(tr.Spans))
		}
	})

	t.Run("root rate 0", func(t *testing.T) {
		meshtest.MustApply(t, m.cp, m.mesh("0"))
		jaegertest.Await(t, 10*time.Second, "an unsampled root decision at frontend", func() bool {
			h, _ := m.get(t, "/items")
			return strings.HasSuffix(h.Get("Traceparent"), "-00")
		})
		// A caller's decision still wins.
		const tid = "cccccccccccccccc1111111111111111"
		m.get(t, "/items", "Traceparent", "00-"+tid+"-1234567812345678-01")
		m.awaitTrace(t, tid, 2)
		meshtest.MustApply(t, m.cp, m.mesh("100"))
		jaegertest.Await(t, 10*time.Second, "a sampled root decision at frontend again", func() bool {
			h, _ := m.get(t, "/items")
			return strings.HasSuffix(h.Get("Traceparent"), "-01")
		})
	})

	t.Run("route", func(t *testing.T) {
		meshtest.MustApply(t, m.cp, `apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: catalog-routes, namespace: shop}
spec:
  service: catalog
  rules:
  - matches: [{path: {prefix: /routed}}]
    backends: [{service: catalog, weight: 100}]
    headers:
      request: {set: {x-route: "yes"}}
`)
		jaegertest.Await(t, 10*time.Second, "the Route at frontend", func() bool {
			h, _ := m.get(t, "/routed/1")
			return h.Get("X-Route") == "yes"
		})
		const tid, sid = "eeeeeeeeeeeeeeee1111111111111111", "2222222222222222"
		m.get(t, "/routed/2", "Traceparent", "00-"+tid+"-"+sid+"-01")
		tr := m.awaitTrace(t, tid, 2)
		hop(t, tr, "catalog.shop", catalogID, sid, allow)
		for _, sp := range tr.Spans {
			if sp.OperationName != "outbound catalog.shop" {
				continue
			}
			name, _ := sp.Tag(tracing.AttrRoute)
			rule, _ := sp.Tag(tracing.AttrRouteRule)
			if name != "shop/catalog-routes" || rule != "0" {
				t.Errorf("client span's route: got %q rule %q, want shop/catalog-routes rule 0", name, rule)
			}
		}
	})

	t.Run("gateway", func(t *testing.T) {
		// The gateway is a hop too: its span, then catalog's inbound span
		// as its child; HTTP/1.1 takes its fast path, h2 net/http.
		meshtest.MustApply(t, m.cp, `apiVersion: trellis.dev/v1alpha1
kind: GatewayRoute
metadata: {name: shop-public, namespace: shop}
spec:
  hosts: [shop.example.com]
  rules:
  - service: catalog
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: from-ingress, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{namespaces: [ingress]}]
`)
		pki := testutil.NewServingPKI(t, t.TempDir())
		cert, key, _ := pki.Issue(t, "shop", "shop.example.com")
		gw := meshtest.StartProxy(t, m.cp, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", Gateway: &proxy.GatewayConfig{
			ListenHTTP: "127.0.0.1:0", ListenHTTPS: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}}}})
		_, port, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
		for i, c := range []struct {
			url    string
			client *http.Client
		}{
			{"http://shop.example.com/items", dialingClient(gw.GatewayHTTPAddr(), nil)},
			{"https://shop.example.com:" + port + "/items", dialingClient(gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool})},
		} {
			tid := fmt.Sprintf("dddddddddddddddd%016x", i+1)
			const sid = "0102030405060708"
			get := func(traceparent string) int {
				req, _ := http.NewRequest("GET", c.url, nil)
				if traceparent != "" {
					req.Header.Set("Traceparent", traceparent)
				}
				resp, err := c.client.Do(req)
				if err != nil {
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			jaegertest.Await(t, 10*time.Second, "a 200 through the gateway", func() bool { return get("") == 200 })
			if code := get("00-" + tid + "-" + sid + "-01"); code != 200 {
				t.Fatalf("%s: got %d, want 200", c.url, code)
			}
			tr := m.awaitTrace(t, tid, 2)
			var gspan, in *jaegertest.Span
			for k := range tr.Spans {
				switch sp := &tr.Spans[k]; sp.OperationName {
				case "gateway catalog.shop":
					gspan = sp
				case "inbound catalog.shop":
					in = sp
				}
			}
			if gspan == nil || in == nil {
				t.Fatalf("%s: want spans gateway and inbound catalog.shop, got %+v", c.url, tr.Spans)
			}
			if gspan.Parent() != sid {
				t.Errorf("%s: gateway span's parent: got %s, want the caller's %s", c.url, gspan.Parent(), sid)
			}
			if got, want := tr.Processes[gspan.ProcessID].ServiceName, "public.ingress"; got != want {
				t.Errorf("gateway span's service: got %q, want %q", got, want)
			}
			if in.Parent() != gspan.SpanID {
				t.Errorf("%s: inbound span's parent: got %s, want the gateway's %s", c.url, in.Parent(), gspan.SpanID)
			}
			if got, _ := in.Tag(tracing.AttrPolicy); got != "shop/from-ingress" {
				t.Errorf("%s: inbound span's policy: got %q, want shop/from-ingress", c.url, got)
			}
		}
	})

	t.Run("load", func(t *testing.T) {
		// A few hundred requests with every one traced: none fails, and
		// every one is a trace in Jaeger.
		before := len(m.j.Traces(t, "frontend.shop"))
		const n, workers = 400, 8
		var failed, next atomic.Int64
		var wg sync.WaitGroup
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= n {
					resp, err := hc.Get("http://" + m.catalogUp + "/items")
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f != 0 {
			t.Errorf("%d of %d requests failed with tracing on", f, n)
		}
		jaegertest.Await(t, 20*time.Second, fmt.Sprintf("%d more traces of frontend.shop in jaeger", n), func() bool {
			return len(m.j.Traces(t, "frontend.shop")) >= before+n
		})
	})
}

// dialingClient dials addr whatever the URL's host (with TLS when
// tlsConf is set, offering h2).
func dialingClient(addr string, tlsConf *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		TLSClientConfig:   tlsConf,
		ForceAttemptHTTP2: tlsConf != nil,
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}
