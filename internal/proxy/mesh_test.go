package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
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

// TestMeshEndToEnd runs a control plane and two real proxies: frontend
// calls catalog through its --upstream listener and its HTTP proxy port.
func TestMeshEndToEnd(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	var gotXFCC string
	catalogApp := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotXFCC = r.Header.Get("X-Forwarded-Client-Cert")
		io.WriteString(w, "items")
	}))
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: catalogApp})
	front := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})

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
	testutil.Eventually(t, "catalog reachable through frontend's upstream listener", func() bool {
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
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: deny}}\n")
	testutil.Eventually(t, "deny to take effect", func() bool {
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
	cp := meshtest.StartControlPlane(t, controlplane.Config{WorkloadTTL: 3 * time.Second})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	server := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	url := "http://" + client.UpstreamAddr(0) + "/"
	hc := &http.Client{Timeout: 5 * time.Second}
	testutil.Eventually(t, "catalog reachable", func() bool {
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
