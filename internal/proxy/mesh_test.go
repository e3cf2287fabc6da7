package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
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
func startProxy(t *testing.T, cp *testutil.ControlPlane, service, appAddr string, upstreams ...proxy.Upstream) *proxy.Proxy {
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

func apply(t *testing.T, cp *testutil.ControlPlane, docs string) {
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
	cp := testutil.StartControlPlane(t, controlplane.Config{})
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
