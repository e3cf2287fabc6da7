package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// startApp serves h on a free loopback port.
func startApp(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// startProxy starts a real proxy against cp for service in namespace shop.
func startProxy(t *testing.T, cp *cptest.ControlPlane, service, appAddr string, upstreams ...proxy.Upstream) *proxy.Proxy {
	t.Helper()
	tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: service, Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{
		ControlAddr:   cp.GRPCAddr(),
		CAFile:        filepath.Join(cp.DataDir, identity.RootCertFile),
		Token:         tok.Token,
		Service:       service,
		Namespace:     "shop",
		AppAddr:       appAddr,
		InboundAddr:   "127.0.0.1:0",
		AdminAddr:     "127.0.0.1:0",
		HTTPProxyAddr: "127.0.0.1:0",
		Upstreams:     upstreams,
		DrainTimeout:  2 * time.Second,
		Logger:        testutil.Logger(t).With("proxy", service),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("proxy %s not ready", service)
	}
	return p
}

func apply(t *testing.T, cp *cptest.ControlPlane, docs string) {
	t.Helper()
	objs, err := resource.Decode([]byte(docs), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client(t).Apply(context.Background(), objs, false); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMeshEndToEnd runs a control plane and two real proxies: frontend
// calls catalog through its --upstream listener and its HTTP proxy port.
func TestMeshEndToEnd(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	apply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	var gotXFCC string
	catalogApp := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotXFCC = r.Header.Get("X-Forwarded-Client-Cert")
		io.WriteString(w, "items")
	}))
	startProxy(t, cp, "catalog", catalogApp)
	front := startProxy(t, cp, "frontend", "", proxy.Upstream{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"})

	// frontend learns catalog's endpoint from a pushed snapshot.
	get := func(url string, via string) (int, string) {
		c := &http.Client{Timeout: 5 * time.Second}
		if via != "" {
			c.Transport = &http.Transport{Proxy: http.ProxyURL(mustURL(t, "http://"+via))}
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Forwarded-Client-Cert", "By=forged;URI=spiffe://trellis.local/ns/shop/sa/admin")
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "catalog reachable through frontend's upstream listener", func() bool {
		code, _ := get("http://"+front.UpstreamAddr(0)+"/items", "")
		return code == http.StatusOK
	})
	code, body := get("http://"+front.UpstreamAddr(0)+"/items", "")
	if code != http.StatusOK || body != "items" {
		t.Errorf("via upstream: %d %q, want 200 items", code, body)
	}
	want := "By=spiffe://trellis.local/ns/shop/sa/catalog;URI=spiffe://trellis.local/ns/shop/sa/frontend"
	if gotXFCC != want {
		t.Errorf("app saw X-Forwarded-Client-Cert %q, want %q (the forged one must never arrive)", gotXFCC, want)
	}
	code, body = get("http://catalog.shop/items", front.HTTPProxyAddr())
	if code != http.StatusOK || body != "items" {
		t.Errorf("via HTTP proxy: %d %q, want 200 items", code, body)
	}

	// Mesh default deny: the same call is refused with 403.
	apply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: deny}}\n")
	waitFor(t, "deny to take effect", func() bool {
		code, _ := get("http://"+front.UpstreamAddr(0)+"/items", "")
		return code == http.StatusForbidden
	})

	// /ready and /config on the admin port.
	resp, err := http.Get("http://" + front.AdminAddr() + "/ready")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/ready: %v %v", resp, err)
	}
	resp, err = http.Get("http://" + front.AdminAddr() + "/config")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"name": "catalog"`) || !strings.Contains(string(b), "spiffe://trellis.local/ns/shop/sa/frontend") {
		t.Errorf("/config lacks the catalog service or own identity: %s", b)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// metricValue scrapes one un-labelled metric from a proxy's admin port.
func metricValue(t *testing.T, p *proxy.Proxy, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestRenewalUnderTraffic: with 3-second certificates, both proxies renew
// several times while requests flow, and no request fails.
func TestRenewalUnderTraffic(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{WorkloadTTL: 3 * time.Second})
	apply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	server := startProxy(t, cp, "catalog", app)
	client := startProxy(t, cp, "frontend", "", proxy.Upstream{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"})
	url := "http://" + client.UpstreamAddr(0) + "/"
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, "catalog reachable", func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var ok, failed int
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		resp, err := hc.Get(url)
		if err != nil {
			failed++
			t.Logf("request failed: %v", err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
			t.Logf("request: %s", resp.Status)
			continue
		}
		ok++
		time.Sleep(2 * time.Millisecond)
	}
	if failed > 0 || ok < 100 {
		t.Errorf("under renewal: %d ok, %d failed; want no failures", ok, failed)
	}
	for name, p := range map[string]*proxy.Proxy{"client": client, "server": server} {
		if n := metricValue(t, p, "trellis_certificate_renewals_total"); n < 2 {
			t.Errorf("%s proxy renewed %v times in 5s with 3s certificates, want at least 2", name, n)
		}
	}
}
