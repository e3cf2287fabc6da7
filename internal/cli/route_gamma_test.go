//go:build !trellis_nokube

package cli_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/kube/gatewayapi"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// gammaRoutes converts Gateway API routes of namespace shop (every
// Service exists) and returns their Trellis Routes as a stream for
// trellis apply.
func gammaRoutes(t *testing.T, routes ...any) string {
	t.Helper()
	exists := func(ns, name string) bool { return ns == "shop" }
	var docs []string
	for _, r := range routes {
		var res gatewayapi.Result
		switch r := r.(type) {
		case *gwapiv1.HTTPRoute:
			res = gatewayapi.HTTPRoute(r, exists)
		case *gwapiv1.GRPCRoute:
			res = gatewayapi.GRPCRoute(r, exists)
		}
		if len(res.Routes) != 1 {
			t.Fatalf("%v: %d Routes, want 1 (%+v)", r, len(res.Routes), res.Parents)
		}
		b, err := json.Marshal(res.Routes[0])
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	return strings.Join(docs, "\n---\n") + "\n"
}

func gammaParent(svc string) gwapiv1.CommonRouteSpec {
	return gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Group: new(gwapiv1.Group("")), Kind: new(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(svc)}}}
}

func gammaBackend(svc string) gwapiv1.BackendRef {
	return gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(svc), Port: new(gwapiv1.PortNumber(8080))}}
}

func gammaHTTPRoute(name, parent string, prefixes map[string]string) *gwapiv1.HTTPRoute {
	hr := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: gammaParent(parent)}}
	for p, to := range prefixes {
		rule := gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gammaBackend(to)}}}
		if p != "" {
			rule.Matches = []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: new(gwapiv1.PathMatchPathPrefix), Value: new(p)}}}
		}
		hr.Spec.Rules = append(hr.Spec.Rules, rule)
	}
	return hr
}

// Two HTTPRoutes on catalog each steer their own prefixes (and the
// longer /items/cart of one beats /items of the other); a path neither
// takes gets a 404 from the caller's proxy. 300 requests on the HTTP/1.1
// fast path and 300 through the HTTP forward proxy (net/http): no wrong
// answer.
func TestGatewayAPIRoutesMergeThroughProxies(t *testing.T) {
	m := startRouteMesh(t)
	for _, svc := range []string{"catalog-items", "catalog-cart"} {
		meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: svc, AppAddr: namedApp(t, svc)})
	}
	m.mustRun(t, gammaRoutes(t,
		gammaHTTPRoute("items", "catalog", map[string]string{"/items": "catalog-items"}),
		gammaHTTPRoute("cart", "catalog", map[string]string{"/cart": "catalog-cart", "/items/cart": "catalog-cart"}),
	), "apply", "-f", "-")

	type want struct {
		code int
		body string
	}
	cases := []struct {
		path string
		want want
	}{
		{"/items/1", want{200, "catalog-items"}},
		{"/cart/1", want{200, "catalog-cart"}},
		{"/items/cart/1", want{200, "catalog-cart"}},
		{"/other", want{404, "unmatched"}},
	}
	answer := func(code int, body string, h http.Header) want {
		if code == 404 && h.Get("X-Trellis-Route") == "unmatched" {
			return want{404, "unmatched"}
		}
		return want{code, body}
	}
	deadline := time.Now().Add(15 * time.Second)
	for ready := false; !ready; {
		ready = true
		for _, c := range cases {
			if code, body, h := m.get(t, c.path, nil); answer(code, body, h) != c.want {
				ready = false
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the merged Routes never took effect")
		}
		time.Sleep(20 * time.Millisecond)
	}

	viaProxy := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: m.front.HTTPProxyAddr()})}}
	paths := map[string]func(path string) (int, string, http.Header){
		"HTTP/1.1 fast path": func(path string) (int, string, http.Header) { return m.get(t, path, nil) },
		"net/http (HTTP forward proxy)": func(path string) (int, string, http.Header) {
			resp, err := viaProxy.Get("http://catalog.shop" + path)
			if err != nil {
				t.Error(err)
				return 0, "", nil
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b), resp.Header
		},
	}
	const n = 300
	unmatchedBefore := m.routeEvents(t, `rule="-1"`, `event="aborted"`)
	for name, call := range paths {
		got := map[want]int{}
		wrong := 0
		for i := range n {
			c := cases[i%len(cases)]
			a := answer(call(c.path))
			got[a]++
			if a != c.want {
				wrong++
				if wrong <= 3 {
					t.Errorf("%s: GET %s: got %v, want %v", name, c.path, a, c.want)
				}
			}
		}
		t.Logf("%s: %d requests: %v", name, n, got)
		if wrong != 0 || got[want{200, "catalog-items"}] != n/4 || got[want{200, "catalog-cart"}] != n/2 || got[want{404, "unmatched"}] != n/4 {
			t.Errorf("%s: %d wrong answers of %d; got %v, want %d catalog-items, %d catalog-cart, %d unmatched 404s", name, wrong, n, got, n/4, n/2, n/4)
		}
	}
	if got := m.routeEvents(t, `rule="-1"`, `event="aborted"`) - unmatchedBefore; got != 2*n/4 {
		t.Errorf("trellis_route_events_total{rule=\"-1\",event=\"aborted\"}: %d, want %d", got, 2*n/4)
	}
}

// Two GRPCRoutes on orders steer Health/Check by a header, an HTTPRoute
// on orders is not applied (GRPCRoutes win), and a method neither takes
// gets UNIMPLEMENTED from the caller's proxy: 300 calls through the
// HTTP/2 relay, no wrong answer.
func TestGatewayAPIGRPCRoutesThroughProxies(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders", Protocol: "grpc", AppAddr: healthApp(t, healthpb.HealthCheckResponse_SERVING)})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders-v2", Protocol: "grpc", AppAddr: healthApp(t, healthpb.HealthCheckResponse_NOT_SERVING)})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend",
		Upstreams: []proxy.Upstream{{Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	check := func(to string, headers map[string]string) *gwapiv1.GRPCRoute {
		gr := &gwapiv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Name: to, Namespace: "shop"}, Spec: gwapiv1.GRPCRouteSpec{CommonRouteSpec: gammaParent("orders")}}
		match := gwapiv1.GRPCRouteMatch{Method: &gwapiv1.GRPCMethodMatch{Service: new("grpc.health.v1.Health"), Method: new("Check")}}
		for k, v := range headers {
			match.Headers = append(match.Headers, gwapiv1.GRPCHeaderMatch{Name: gwapiv1.GRPCHeaderName(k), Value: v})
		}
		gr.Spec.Rules = []gwapiv1.GRPCRouteRule{{Matches: []gwapiv1.GRPCRouteMatch{match}, BackendRefs: []gwapiv1.GRPCBackendRef{{BackendRef: gammaBackend(to)}}}}
		return gr
	}
	// "orders" sorts first, but the match with a header comes first.
	m.mustRun(t, gammaRoutes(t, check("orders", nil), check("orders-v2", map[string]string{"x-to": "v2"}),
		gammaHTTPRoute("orders-all", "orders", map[string]string{"": "orders-v2"})), "apply", "-f", "-")

	cc, err := grpc.NewClient("passthrough:///"+front.UpstreamAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	hc := healthpb.NewHealthClient(cc)
	// call answers "SERVING" (orders), "NOT_SERVING" (orders-v2),
	// "unmatched" (UNIMPLEMENTED from the proxy) or the error.
	call := func(i int) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		switch i % 3 {
		case 0:
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err.Error()
			}
			return resp.GetStatus().String()
		case 1:
			resp, err := hc.Check(metadata.AppendToOutgoingContext(ctx, "x-to", "v2"), &healthpb.HealthCheckRequest{})
			if err != nil {
				return err.Error()
			}
			return resp.GetStatus().String()
		}
		var hd, tr metadata.MD
		err := cc.Invoke(ctx, "/shop.Unknown/Do", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}, grpc.Header(&hd), grpc.Trailer(&tr))
		if status.Code(err) == codes.Unimplemented && (strings.Join(tr.Get("x-trellis-route"), "") == "unmatched" || strings.Join(hd.Get("x-trellis-route"), "") == "unmatched") {
			return "unmatched"
		}
		return "unknown method: " + status.Code(err).String()
	}
	wants := []string{"SERVING", "NOT_SERVING", "unmatched"}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		if call(1) == "NOT_SERVING" && call(2) == "unmatched" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the GRPCRoutes never took effect: %q, %q", call(1), call(2))
		}
		time.Sleep(20 * time.Millisecond)
	}
	const n = 300
	got := map[string]int{}
	wrong := 0
	for i := range n {
		a := call(i)
		got[a]++
		if a != wants[i%3] {
			wrong++
			if wrong <= 3 {
				t.Errorf("call %d: got %q, want %q", i, a, wants[i%3])
			}
		}
	}
	t.Logf("HTTP/2 relay: %d calls: %v", n, got)
	if wrong != 0 || got["SERVING"] != n/3 || got["NOT_SERVING"] != n/3 || got["unmatched"] != n/3 {
		t.Errorf("%d wrong answers of %d; got %v, want %d of each", wrong, n, got, n/3)
	}
}

// namedApp is an HTTP app answering its name.
func namedApp(t *testing.T, name string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// healthApp is a gRPC app whose health service answers st.
func healthApp(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) string {
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

// The gateway applies the merged Routes of the service it routes to, on
// its HTTP/1.1 fast path and its net/http path (HTTP/2 clients): 300
// requests each, a 404 for the paths no rule takes.
func TestGatewayAPIRoutesThroughGateway(t *testing.T) {
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
`+gammaRoutes(t,
		gammaHTTPRoute("items", "catalog", map[string]string{"/items": "catalog-items"}),
		gammaHTTPRoute("cart", "catalog", map[string]string{"/cart": "catalog-cart"}),
	), "apply", "-f", "-")
	for _, svc := range []string{"catalog", "catalog-items", "catalog-cart"} {
		meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: svc, AppAddr: whoApp(t, svc)})
	}
	gw := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "public", Namespace: "ingress", HTTPProxyAddr: "off", Gateway: &proxy.GatewayConfig{
		ListenHTTPS: "127.0.0.1:0", ListenHTTP: "127.0.0.1:0", Certs: []servingcert.Pair{{CertFile: cert, KeyFile: key}},
	}})
	plain := gatewayClient(gw.GatewayHTTPAddr(), nil, false)
	h2 := gatewayClient(gw.GatewayHTTPSAddr(), &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}, true)
	_, httpsPort, _ := net.SplitHostPort(gw.GatewayHTTPSAddr())
	// answer is who served, or "unmatched" for the proxy's 404.
	answer := func(c *http.Client, url string) string {
		code, body, h := getBody(t, c, url, nil)
		if code == 404 && h.Get("X-Trellis-Route") == "unmatched" {
			return "unmatched"
		}
		name, _, _ := strings.Cut(body, " ")
		return strconv.Itoa(code) + " " + name
	}
	testutil.EventuallyWithin(t, 15*time.Second, "the merged Routes apply at the gateway", func() bool {
		return answer(plain, "http://catalog.example.com/cart/1") == "200 catalog-cart" && answer(plain, "http://catalog.example.com/items/1") == "200 catalog-items" &&
			answer(plain, "http://catalog.example.com/other") == "unmatched"
	})
	cases := []struct{ path, want string }{{"/items/1", "200 catalog-items"}, {"/cart/1", "200 catalog-cart"}, {"/other", "unmatched"}}
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{{"h1 fast path", plain, "http://catalog.example.com"}, {"h2 net/http", h2, "https://catalog.example.com:" + httpsPort}} {
		const n = 300
		got := map[string]int{}
		wrong := 0
		for i := range n {
			tc := cases[i%len(cases)]
			a := answer(c.client, c.url+tc.path)
			got[a]++
			if a != tc.want {
				wrong++
				if wrong <= 3 {
					t.Errorf("%s: GET %s: got %q, want %q", c.name, tc.path, a, tc.want)
				}
			}
		}
		t.Logf("%s: %d requests: %v", c.name, n, got)
		if wrong != 0 || got["200 catalog-items"] != n/3 || got["200 catalog-cart"] != n/3 || got["unmatched"] != n/3 {
			t.Errorf("%s: %d wrong answers of %d; got %v, want %d of each", c.name, wrong, n, got, n/3)
		}
	}
}

// trellis route check explains merged Routes and the 404.
func TestRouteCheckGatewayAPIRoutes(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, gammaRoutes(t,
		gammaHTTPRoute("items", "catalog", map[string]string{"/items": "catalog-items"}),
		gammaHTTPRoute("cart", "catalog", map[string]string{"/items/cart": "catalog-cart"}),
	)+`---
apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: orders, namespace: shop}
spec:
  service: orders
  rules: [{matches: [{path: {prefix: /a}}], backends: [{service: orders-v2}]}]
`+"---\n"+gammaRoutes(t, gammaHTTPRoute("orders", "orders", map[string]string{"/b": "orders-v3"})), "apply", "-f", "-")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--to", "catalog.shop", "--path", "/items/cart/1"}, []string{
			"route:    shop/httproute.cart.catalog rule 0",
			"merged:   ", "shop/httproute.cart.catalog", "shop/httproute.items.catalog",
			"catalog-cart.shop            weight 1    100.00%"}},
		{[]string{"--to", "catalog.shop", "--path", "/other"}, []string{
			", no rule matches\n",
			"answer:   404 (gRPC calls: status 12) from the caller's proxy: the Route answers requests no rule takes"}},
		{[]string{"--to", "orders.shop", "--path", "/b"}, []string{
			"route:    shop/orders, no rule matches (the service itself)",
			"ignored:  shop/httproute.orders.orders (another Route for the service applies",
			"orders.shop"}},
	} {
		out := m.mustRun(t, "", append([]string{"route", "check"}, tc.args...)...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("route check %v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
	out := m.mustRun(t, "", "route", "check", "--to", "catalog.shop", "--path", "/other", "-o", "json")
	for _, w := range []string{`"rule": -1`, `"unmatched": {`, `"status": 404`, `"grpcStatus": 12`, `"backends": []`} {
		if !strings.Contains(out, w) {
			t.Errorf("route check -o json lacks %q:\n%s", w, out)
		}
	}
}
