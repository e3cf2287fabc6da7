package extauthz_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/extauthztest"
)

const (
	frontend = "spiffe://trellis.local/ns/shop/sa/frontend"
	catalog  = "spiffe://trellis.local/ns/shop/sa/catalog"
)

func provider(addr string) *meshconfig.ExtAuthzProvider {
	return &meshconfig.ExtAuthzProvider{
		Name: "ext", Address: addr, Timeout: 2 * time.Second,
		IncludeHeaders:    []string{"x-tenant", "authorization"},
		UpstreamHeaders:   []string{"x-ext-user"},
		DownstreamHeaders: []string{"x-ext-reason"},
	}
}

func request(path string) *extauthz.Request {
	h := http.Header{"X-Tenant": {"acme"}, "X-Other": {"not sent"}}
	return &extauthz.Request{
		Source: frontend, Destination: catalog, Method: "GET", Path: path, Query: "a=1", Host: "catalog.shop",
		Protocol: "HTTP/1.1", Header: h.Get, RequestPrincipal: "https://id.example.com/alice",
	}
}

func TestCheckAllowAndDeny(t *testing.T) {
	srv := extauthztest.Start(t, &extauthztest.Server{})
	pool := extauthz.NewPool()
	defer pool.Close()
	p := provider(srv.Addr())

	res := pool.Check(context.Background(), "ext", p, request("/items"))
	if !res.Allow || res.Err != nil {
		t.Fatalf("allow: got %+v", res)
	}
	if want := []extauthz.Header{{"x-ext-user", frontend}}; !slices.Equal(res.Upstream, want) {
		t.Errorf("upstream headers: got %v, want %v (x-ext-secret is not listed)", res.Upstream, want)
	}
	got := srv.Last().GetAttributes()
	if got.GetSource().GetPrincipal() != frontend || got.GetDestination().GetPrincipal() != catalog {
		t.Errorf("peers: got %q -> %q", got.GetSource().GetPrincipal(), got.GetDestination().GetPrincipal())
	}
	h := got.GetRequest().GetHttp()
	if h.GetMethod() != "GET" || h.GetPath() != "/items?a=1" || h.GetHost() != "catalog.shop" || h.GetProtocol() != "HTTP/1.1" {
		t.Errorf("http: got %s %s %s %s", h.GetMethod(), h.GetPath(), h.GetHost(), h.GetProtocol())
	}
	if h.GetHeaders()["x-tenant"] != "acme" || h.GetHeaders()[":path"] != "/items?a=1" {
		t.Errorf("headers: got %v", h.GetHeaders())
	}
	if _, ok := h.GetHeaders()["x-other"]; ok {
		t.Errorf("headers: got x-other, which includeRequestHeadersInCheck does not list")
	}
	md := got.GetMetadataContext().GetFilterMetadata()[extauthz.MetadataNamespace].GetFields()["request.auth.principal"].GetStringValue()
	if md != "https://id.example.com/alice" {
		t.Errorf("request principal in metadata: got %q", md)
	}

	res = pool.Check(context.Background(), "ext", p, request("/deny/x"))
	if res.Allow || res.Err != nil || res.Status != http.StatusUnauthorized || res.Body != extauthztest.DenyBody {
		t.Fatalf("deny: got %+v", res)
	}
	if want := []extauthz.Header{{"x-ext-reason", "path"}}; !slices.Equal(res.Downstream, want) {
		t.Errorf("downstream headers: got %v, want %v", res.Downstream, want)
	}
	if got, want := srv.Checks(), int64(2); got != want {
		t.Errorf("checks: got %d, want %d (never cached)", got, want)
	}
	if got := pool.Len(); got != 1 {
		t.Errorf("connections: got %d, want 1", got)
	}
}

func TestCheckFailures(t *testing.T) {
	srv := extauthztest.Start(t, &extauthztest.Server{})
	pool := extauthz.NewPool()
	defer pool.Close()

	t.Run("timeout", func(t *testing.T) {
		p := provider(srv.Addr())
		p.Timeout = 50 * time.Millisecond
		start := time.Now()
		res := pool.Check(context.Background(), "ext", p, request(extauthztest.SlowPrefix))
		if res.Allow || res.Status != http.StatusForbidden || !errors.Is(res.Err, context.DeadlineExceeded) {
			t.Fatalf("got %+v, want a closed failure on the deadline", res)
		}
		if d := time.Since(start); d > extauthztest.Slow/2 {
			t.Errorf("took %s, want about the 50ms timeout", d)
		}
	})
	t.Run("unknown provider", func(t *testing.T) {
		res := pool.Check(context.Background(), "nope", nil, request("/"))
		if res.Allow || !errors.Is(res.Err, extauthz.ErrUnknownProvider) {
			t.Fatalf("got %+v, want a closed failure naming the provider", res)
		}
	})
	t.Run("server down", func(t *testing.T) {
		down := extauthztest.Start(t, &extauthztest.Server{})
		p := provider(down.Addr())
		if res := pool.Check(context.Background(), "ext", p, request("/")); !res.Allow {
			t.Fatalf("before the stop: got %+v", res)
		}
		down.Stop()
		for i := range 20 {
			res := pool.Check(context.Background(), "ext", p, request("/"))
			if res.Allow || res.Err == nil || res.Status != http.StatusForbidden {
				t.Fatalf("check %d with the server down: got %+v, want closed", i, res)
			}
		}
		p.FailOpen = true
		if res := pool.Check(context.Background(), "ext", p, request("/")); !res.Allow || res.Err == nil {
			t.Fatalf("failOpen: got %+v, want allowed with the error", res)
		}
		down.Restart(t)
		p.FailOpen = false
		testutil.EventuallyWithin(t, 5*time.Second, "checks allowed after the restart", func() bool {
			return pool.Check(context.Background(), "ext", p, request("/")).Allow
		})
	})
	t.Run("retain", func(t *testing.T) {
		before := pool.Len()
		pool.Retain(map[string]*meshconfig.ExtAuthzProvider{"ext": provider(srv.Addr())})
		if got := pool.Len(); got != 1 || before < 2 {
			t.Errorf("connections: got %d after Retain (from %d), want 1", got, before)
		}
		if res := pool.Check(context.Background(), "ext", provider(srv.Addr()), request("/")); !res.Allow {
			t.Errorf("after Retain: got %+v", res)
		}
	})
}
