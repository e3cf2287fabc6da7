package cli_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/extauthztest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// extAuthzMesh is a Mesh whose provider "ext" is the ext_authz server at
// addr, plus frontend's ALLOW and a CUSTOM policy handing catalog's
// requests to ext.
func extAuthzMesh(addr string, failOpen bool) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  extensionProviders:
  - name: ext
    envoyExtAuthzGrpc:
      service: %s
      port: %s
      timeout: 2s
      failOpen: %t
      includeRequestHeadersInCheck: [x-tenant]
      headersToUpstreamOnAllow: [x-ext-user]
      headersToDownstreamOnDeny: [x-ext-reason]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules: [{from: [{services: [frontend]}], to: [{methods: [GET]}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: shop}
spec:
  selector: {service: catalog}
  action: CUSTOM
  provider: {name: ext}
  rules: [{to: [{notPaths: [/health]}]}]
`, host, port, failOpen)
}

// External authorization through real proxies and a real ext_authz
// server (extauthztest: Envoy's API only), on the HTTP/1.1 fast path and
// on net/http (a percent-encoded path): 400 requests allowed (the app
// sees the provider's x-ext-user, never its unlisted header nor the
// caller's own x-ext-user) or denied
// with the provider's 401, body and listed header; the provider stopped,
// 200 requests fail closed with 403 saying it is unavailable; failOpen,
// 200 pass. Nothing unexpected in 800.
func TestExtAuthzThroughProxies(t *testing.T) {
	m := startMesh(t)
	srv := extauthztest.Start(t, &extauthztest.Server{})
	m.mustRun(t, extAuthzMesh(srv.Addr(), false), "apply", "-f", "-")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s secret=%s", r.Header.Get("X-Ext-User"), r.Header.Get("X-Ext-Secret"))
	}))
	t.Cleanup(app.Close)
	cat := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: strings.TrimPrefix(app.URL, "http://")})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	client := &http.Client{Timeout: 5 * time.Second}
	type answer struct {
		code             int
		body             string
		reason, deniedBy string
	}
	call := func(path string) answer {
		req, _ := http.NewRequest("GET", "http://"+front.UpstreamAddr(0)+path, nil)
		req.Header.Set("X-Tenant", "acme")
		req.Header.Set("X-Ext-User", "mallory") // the provider's to set: stripped
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, string(b), resp.Header.Get("X-Ext-Reason"), resp.Header.Get("X-Trellis-Denied-By")}
	}
	frontendID := front.Identity().ID().String()
	deadline := time.Now().Add(15 * time.Second)
	for call("/deny").code != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatalf("the CUSTOM policy never took effect within 15s: %+v", call("/deny"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	allowed := answer{200, "user=" + frontendID + " secret=", "", ""}
	denied := answer{http.StatusUnauthorized, extauthztest.DenyBody, "path", "shop/ext-authz"}
	checks := srv.Checks()
	for i := range 100 {
		for _, tc := range []struct {
			path string
			want answer
		}{
			{fmt.Sprintf("/items/%d", i), allowed},
			{fmt.Sprintf("/%%69tems/%d", i), allowed}, // net/http
			{fmt.Sprintf("/deny/%d", i), denied},
			{fmt.Sprintf("/%%64eny/%d", i), denied},
		} {
			if got := call(tc.path); got != tc.want {
				t.Fatalf("request %d %s: got %+v, want %+v", i, tc.path, got, tc.want)
			}
		}
	}
	if got := srv.Checks() - checks; got != 400 {
		t.Errorf("checks for 400 requests: got %d, want 400 (decisions are not cached)", got)
	}
	if got := srv.Last().GetAttributes().GetRequest().GetHttp().GetHeaders()["x-tenant"]; got != "acme" {
		t.Errorf("x-tenant in the check: got %q, want acme", got)
	}
	if got := call("/health"); got != (answer{200, "user= secret=", "", ""}) {
		t.Errorf("a path no CUSTOM rule matches: got %+v, want 200 without the caller's x-ext-user", got)
	}

	srv.Stop()
	for i := range 100 {
		for _, path := range []string{fmt.Sprintf("/items/%d", i), fmt.Sprintf("/%%69tems/%d", i)} {
			got := call(path)
			if got.code != http.StatusForbidden || !strings.Contains(got.body, "external authorization service ext unavailable") || got.deniedBy != "shop/ext-authz" {
				t.Fatalf("provider down, request %d %s: got %+v, want 403 saying the service is unavailable", i, path, got)
			}
		}
	}

	m.mustRun(t, extAuthzMesh(srv.Addr(), true), "apply", "-f", "-")
	deadline = time.Now().Add(15 * time.Second)
	for call("/items").code != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("failOpen never took effect within 15s: %+v", call("/items"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 100 {
		for _, path := range []string{fmt.Sprintf("/items/%d", i), fmt.Sprintf("/%%69tems/%d", i)} {
			if got := call(path); got != (answer{200, "user= secret=", "", ""}) {
				t.Fatalf("provider down, failOpen, request %d %s: got %+v, want 200", i, path, got)
			}
		}
	}

	resp, err := http.Get("http://" + cat.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// At least: the waits for the configuration ask more.
	for reason, least := range map[string]float64{"ext_authz_denied": 200, "ext_authz_error": 200} {
		line := `trellis_inbound_refused_requests_total{reason="` + reason + `"} `
		_, rest, ok := strings.Cut(string(body), line)
		v, err := strconv.ParseFloat(strings.Fields(rest + " x")[0], 64)
		if !ok || err != nil || v < least {
			t.Errorf("catalog's refusals{reason=%s}: got %q, want at least %v", reason, strings.Fields(rest + " x")[0], least)
		}
	}
}
