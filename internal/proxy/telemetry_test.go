package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestAccessEventsReachTheCollector: real proxies wire the flag to the
// emitter: a catalog proxy at rate 1 reports every request to the
// collector in the control plane; an orders proxy at rate 0 reports none,
// though its audit events arrive.
func TestAccessEventsReachTheCollector(t *testing.T) {
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := meshtest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + out}})
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {authorization: {default: allow}}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-deletes, namespace: shop}
spec:
  selector: {service: orders}
  action: DENY
  rules:
  - to: [{methods: [DELETE]}]
`)
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app, AccessLogSampleRate: 1})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "orders", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{
		{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}, {Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"},
	}})
	// The catalog proxy names its callers by the services its config
	// lists for them.
	testutil.Eventually(t, "catalog to know frontend", func() bool { return configHas(t, catalog, `"name": "frontend"`) })
	hc := &http.Client{Timeout: 5 * time.Second}
	expect(t, hc, client.UpstreamAddr(0), "GET", "/items", answer{code: 200})
	expect(t, hc, client.UpstreamAddr(1), "GET", "/orders", answer{code: 200})
	expect(t, hc, client.UpstreamAddr(1), "DELETE", "/orders/1", answer{code: 403, deniedBy: "shop/no-deletes"})
	served := func() int {
		return int(scrape(t, catalog, `trellis_requests_total{destination_namespace="shop",destination_service="catalog",direction="inbound",mtls="true",response_code="200",source_namespace="shop",source_principal="spiffe://trellis.local/ns/shop/sa/frontend",source_service="frontend"}`))
	}
	testutil.Eventually(t, "catalog's request counted", func() bool { return served() >= 1 })

	var access []map[string]any
	testutil.Eventually(t, "catalog's access events and orders' denial in the sink", func() bool {
		access = access[:0]
		var denial bool
		data, _ := os.ReadFile(out)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) != nil {
				continue
			}
			switch ev["kind"] {
			case "access":
				access = append(access, ev)
			case "authz.deny":
				denial = denial || ev["destination_service"] == "orders"
			}
		}
		return denial && len(access) >= served()
	})
	if len(access) != served() {
		t.Errorf("sink has %d access events, catalog served %d requests (orders, at rate 0, must report none)", len(access), served())
	}
	for _, ev := range access {
		for k, want := range map[string]string{
			"reporter": "spiffe://trellis.local/ns/shop/sa/catalog", "destination_id": "spiffe://trellis.local/ns/shop/sa/catalog",
			"source_id": "spiffe://trellis.local/ns/shop/sa/frontend", "source_service": "frontend",
			"destination_service": "catalog", "method": "GET", "path": "/items", "decision": "allow",
		} {
			if got, _ := ev[k].(string); got != want {
				t.Errorf("access event %s = %q, want %q (event %v)", k, got, want, ev)
			}
		}
	}
}
