package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// discoveryMesh: catalog admits frontend, ledger admits only reports, so
// frontend's scoped config lists catalog and not ledger.
func discoveryMesh(t *testing.T) *meshtest.ControlPlane {
	t.Helper()
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{services: [frontend]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ledger, namespace: shop}
spec:
  selector: {service: ledger}
  rules:
  - from: [{services: [reports]}]
`)
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: startApp(t, testutil.EchoApp())})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "ledger", AppAddr: startApp(t, testutil.EchoApp())})
	return cp
}

// waitScoped waits until p lists catalog with its endpoint, and checks it
// was not sent ledger.
func waitScoped(t *testing.T, p *proxy.Proxy) {
	t.Helper()
	testutil.Eventually(t, "catalog in frontend's config", func() bool {
		s := p.CurrentSnapshot()
		return s != nil && s.Services[meshconfig.ServiceKey("catalog", "shop")] != nil && len(s.Services[meshconfig.ServiceKey("catalog", "shop")].Endpoints) == 1
	})
	if s := p.CurrentSnapshot(); s.Services[meshconfig.ServiceKey("ledger", "shop")] != nil {
		t.Fatalf("frontend was sent ledger.shop, which no policy admits it to: scoping is off")
	}
}

// hammer sends n requests from 16 goroutines at once and returns the
// answers that differ from want.
func hammer(n int, call func() (int, string, error), want func(code int, body string) bool) []string {
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 16 {
		wg.Go(func() {
			for range next {
				code, body, err := call()
				if err != nil || !want(code, body) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %q %v", code, body, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return bad
}

func do(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestDiscoveryOnFirstUse: a service outside a proxy's scope, called by
// name through the HTTP proxy port, is asked for on first use and the
// calls reach it (ledger's own proxy denies them by policy, as it should:
// the denial is made and audited where the policy lives), every one of
// hundreds sent at once from a cold start. A name nobody serves is a 503
// naming the wait; when a proxy for it joins, the remembered ask brings it.
func TestDiscoveryOnFirstUse(t *testing.T) {
	cp := discoveryMesh(t)
	front := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend"})
	waitScoped(t, front)
	viaProxy := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, "http://"+front.HTTPProxyAddr())), MaxIdleConnsPerHost: 16}}

	denied := func(code int, body string) bool {
		return code == http.StatusForbidden && strings.Contains(body, "RBAC: access denied")
	}
	if bad := hammer(400, func() (int, string, error) { return do(viaProxy, "http://ledger.shop/x") }, denied); len(bad) > 0 {
		t.Fatalf("%d of 400 calls to ledger.shop (outside the scope) were not denied by ledger's proxy; first: %s", len(bad), bad[0])
	}
	if got, _, _ := do(viaProxy, "http://catalog.shop/items"); got != http.StatusOK {
		t.Errorf("catalog.shop (in scope) answered %d, want 200", got)
	}

	code, body, err := do(viaProxy, "http://nosuch.shop/x")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "unknown mesh service (the control plane did not answer for it within 100 ms") {
		t.Errorf("nosuch.shop: %d %q %v, want 503 naming the bounded wait", code, body, err)
	}
	meshtest.StartProxy(t, cp, proxy.Config{Service: "nosuch", AppAddr: startApp(t, testutil.EchoApp())})
	testutil.Eventually(t, "nosuch pushed to frontend once it joined", func() bool {
		s := front.CurrentSnapshot()
		return s.Services[meshconfig.ServiceKey("nosuch", "shop")] != nil && len(s.Services[meshconfig.ServiceKey("nosuch", "shop")].Endpoints) == 1
	})
	if code, body, err := do(viaProxy, "http://nosuch.shop/x"); err != nil || !denied(code, body) {
		t.Errorf("nosuch.shop after it joined: %d %q %v, want its proxy's 403 (the mesh denies by default)", code, body, err)
	}
}

// TestDiscoveryByVirtualIP: a captured connection to the virtual IP of a
// service outside the scope is asked for by address and routed to it,
// every one of hundreds of new connections; an address of the range that
// belongs to no service is refused, never passed through.
func TestDiscoveryByVirtualIP(t *testing.T) {
	requireMark(t)
	r := testutil.NewRedirector(t)
	cp := discoveryMesh(t)
	front := startTransparentProxy(t, cp, proxy.Config{Service: "frontend"}, r)
	waitScoped(t, front)
	svcs, err := cp.Client(t).ListServices(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	var vip netip.Addr
	for _, s := range svcs {
		if s.Name == "ledger" {
			vip, err = netip.ParseAddr(s.VirtualIP)
		}
	}
	if err != nil || !vip.IsValid() {
		t.Fatalf("ledger's virtual IP: %v %v", vip, err)
	}
	dst := netip.AddrPortFrom(vip, 8080)
	denied := func(code int, body string) bool {
		return code == http.StatusForbidden && strings.Contains(body, "RBAC: access denied")
	}
	call := func() (int, string, error) {
		c := r.Client(t, front.CaptureAddr(), dst, false)
		c.Transport.(*http.Transport).DisableKeepAlives = true // a new captured connection each time
		return do(c, "http://ledger.shop.mesh:8080/x")
	}
	if bad := hammer(300, call, denied); len(bad) > 0 {
		t.Fatalf("%d of 300 connections to ledger's virtual IP %s were not routed to ledger; first: %s", len(bad), vip, bad[0])
	}

	unused := netip.MustParseAddr("240.240.255.254")
	if !front.CurrentSnapshot().InVIPRange(unused) {
		t.Fatalf("%s is outside the virtual IP ranges %v", unused, front.CurrentSnapshot().VIPRanges)
	}
	c, err := r.Dial(context.Background(), front.CaptureAddr(), netip.AddrPortFrom(unused, 80))
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Errorf("a connection to %s (a virtual IP of no service) was accepted", unused)
	}
	if got := testutil.Metric(t, front.MetricsForTest().Registry(), "trellis_outbound_captured_total", map[string]string{"result": "passthrough"}); got != 0 {
		t.Errorf("%v connections passed through, want none (virtual IPs are never passthrough)", got)
	}
}
