package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestNoHealthyEndpoints: a service the mesh knows but that has no live
// instance is answered 503 "no healthy endpoints for SERVICE.NS" on every
// kind of outbound listener, never "unknown mesh service". Two cases:
// catalog, whose only proxy left (past its grace period), and orders,
// whose only proxy is client only (no --app-addr). Each listener kind gets
// hundreds of requests, and every one must get that answer.
func TestNoHealthyEndpoints(t *testing.T) {
	const perKind = 200
	cp := meshtest.StartControlPlane(t, controlplane.Config{EndpointGracePeriod: 300 * time.Millisecond})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "items") }))})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "orders"})
	front := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{
		{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"},
		{Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"},
	}})
	upstream := map[string]string{"catalog.shop": front.UpstreamAddr(0), "orders.shop": front.UpstreamAddr(1)}

	h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	testutil.Eventually(t, "catalog reachable", func() bool {
		resp, err := h1.Get("http://" + upstream["catalog.shop"] + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// catalog's only proxy leaves; after the grace period the service
	// stays known, without endpoints.
	if err := catalog.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "catalog listed without instances", func() bool {
		svcs, err := cp.Client(t).ListServices(context.Background(), "shop")
		if err != nil {
			return false
		}
		for _, s := range svcs {
			if s.Name == "catalog" {
				return s.Instances == 0 && s.Endpoints == 0
			}
		}
		return false
	})

	proxyURL := mustURL(t, "http://"+front.HTTPProxyAddr())
	viaProxy := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 8}}
	h2 := testutil.H2CClient(t)
	check := func(resp *http.Response, err error, key string, wantMajor int) error {
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(b), "trellis: no healthy endpoints for "+key+": ") {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		if resp.ProtoMajor != wantMajor {
			return fmt.Errorf("answered over %s, want HTTP/%d (the listener path under test)", resp.Proto, wantMajor)
		}
		return nil
	}
	kinds := []struct {
		name string
		call func(key string) error
	}{
		// Plain HTTP/1.1 keep-alive GETs take the fast path.
		{"upstream port, fast path", func(key string) error {
			resp, err := h1.Get("http://" + upstream[key] + "/x")
			return check(resp, err, key, 1)
		}},
		// h2c with prior knowledge is handed to net/http.
		{"upstream port, net/http", func(key string) error {
			resp, err := h2.Get("http://" + upstream[key] + "/x")
			return check(resp, err, key, 2)
		}},
		{"HTTP proxy port", func(key string) error {
			resp, err := viaProxy.Get("http://" + key + "/x")
			return check(resp, err, key, 1)
		}},
		{"HTTP proxy port, CONNECT", func(key string) error {
			c, err := net.DialTimeout("tcp", front.HTTPProxyAddr(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(c, "CONNECT %s:80 HTTP/1.1\r\nHost: %s:80\r\n\r\n", key, key); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
			return check(resp, err, key, 1)
		}},
	}
	// The frontend may still be applying the snapshot without catalog's
	// endpoint: wait for the first such answer, then count.
	testutil.Eventually(t, "frontend told catalog has no endpoints", func() bool { return kinds[0].call("catalog.shop") == nil })
	for _, key := range []string{"catalog.shop", "orders.shop"} {
		for _, k := range kinds {
			failed, first := 0, error(nil)
			for range perKind {
				if err := k.call(key); err != nil {
					failed++
					if first == nil {
						first = err
					}
				}
			}
			if failed > 0 {
				t.Errorf("%s, %s: %d of %d requests not answered 503 no healthy endpoints (first: %v)", key, k.name, failed, perKind, first)
			}
		}
	}

	// A name the mesh does not know keeps its own answer and hint.
	resp, err := viaProxy.Get("http://nope.shop/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "unknown mesh service") {
		t.Errorf("unknown service via the HTTP proxy: %d %q, want 503 unknown mesh service (the control plane was asked; it may yet name it)", resp.StatusCode, b)
	}
}

// TestClientOnlyProxyIsNoEndpoint: a proxy without --app-addr registers
// (its workload is listed, so its identity and service are known) but
// advertises no address, so its service has no endpoint from it; and
// --advertise-addr without --app-addr is refused.
func TestClientOnlyProxyIsNoEndpoint(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "orders"})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "orders", AppAddr: startApp(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))})
	c := cp.Client(t)
	var list []adminapi.ProxyInfo
	testutil.Eventually(t, "both orders proxies registered", func() bool {
		var err error
		list, err = c.ListProxies(context.Background(), "shop")
		return err == nil && len(list) == 2
	})
	withAddr := 0
	for _, p := range list {
		if p.AdvertiseAddr != "" {
			withAddr++
		}
	}
	if withAddr != 1 {
		t.Errorf("%d of 2 orders proxies advertise an address, want 1 (only the one with an app): %+v", withAddr, list)
	}
	svcs, err := c.ListServices(context.Background(), "shop")
	if err != nil || len(svcs) != 1 || svcs[0].Instances != 2 || svcs[0].Endpoints != 1 {
		t.Errorf("services: %+v, %v; want orders with 2 instances and 1 endpoint", svcs, err)
	}

	_, err = proxy.New(proxy.Config{Service: "orders", CAFile: "ca.crt", Token: "x", AdvertiseAddr: "10.0.0.1:15006"})
	if err == nil || !strings.Contains(err.Error(), "--advertise-addr") || !strings.Contains(err.Error(), "--app-addr") {
		t.Errorf("New with --advertise-addr and no --app-addr: %v, want an error naming both flags", err)
	}
}
