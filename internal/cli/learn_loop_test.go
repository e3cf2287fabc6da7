package cli_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// The learn -> shadow -> enforce loop with real proxies: traffic is
// learned, policy suggest proposes audit-mode Intents covering exactly
// that traffic, coverage shows it allowed with nothing would-deny,
// promote switches the Intent to enforce, after which calls outside the
// Intents are denied; and promote refuses a policy that would deny
// observed traffic, unless --force.
func TestLearnShadowEnforceLoop(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(app.Close)
	up := []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: strings.TrimPrefix(app.URL, "http://"), StatsInterval: time.Second})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: up})
	batch := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "batch", Upstreams: up})
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(p *proxy.Proxy, method, path string) int {
		req, _ := http.NewRequest(method, "http://"+p.UpstreamAddr(0)+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Wait until catalog's proxy knows both callers (their calls count
	// under their service, not as unknown).
	deadline := time.Now().Add(20 * time.Second)
	for {
		call(front, "GET", "/items/1")
		call(batch, "GET", "/report")
		out := m.mustRun(t, "", "policy", "coverage", "-n", "shop")
		if strings.Contains(out, "frontend.shop") && strings.Contains(out, "batch.shop") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("callers not learned within 20s:\n%s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for i := range 200 {
		if c := call(front, "GET", "/items/"+string(rune('0'+i%10))+"42"); c != 200 {
			t.Fatalf("GET /items: %d", c)
		}
		if i%10 == 0 {
			if c := call(front, "POST", "/items"); c != 200 {
				t.Fatalf("POST /items: %d", c)
			}
			if c := call(batch, "GET", "/report"); c != 200 {
				t.Fatalf("GET /report: %d", c)
			}
		}
	}

	// suggest: once the last calls are learned, two audit-mode Intents.
	var intents []resource.Object
	deadline = time.Now().Add(20 * time.Second)
	for {
		out := m.mustRun(t, "", "policy", "suggest", "-n", "shop", "-o", "yaml")
		objs, err := resource.Decode([]byte(out), "suggest")
		if err != nil {
			t.Fatalf("suggest -o yaml does not decode: %v\n%s", err, out)
		}
		intents = objs
		if len(objs) == 2 && strings.Contains(out, "POST") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("suggest:\n%s\nwant Intents for batch and frontend", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	calls := map[string][]string{}
	for i := range intents {
		if err := resource.Validate(&intents[i]); err != nil {
			t.Fatalf("suggested %s is invalid: %v", intents[i].Ref(), err)
		}
		spec, _ := resource.IntentSpecOf(&intents[i])
		if spec.Enforcement != resource.EnforcementAudit {
			t.Errorf("%s: enforcement %s, want audit first", intents[i].Ref(), spec.Enforcement)
		}
		for _, c := range spec.Calls {
			calls[spec.Client.Service] = append(calls[spec.Client.Service], c.Service+" "+strings.Join(c.Methods, ",")+" "+strings.Join(c.Paths, ","))
		}
	}
	slices.Sort(calls["frontend"])
	if want := []string{"catalog.shop GET /items/*", "catalog.shop POST /items"}; !slices.Equal(calls["frontend"], want) {
		t.Errorf("frontend's calls %q, want %q (least privilege: no more than was seen)", calls["frontend"], want)
	}
	if want := []string{"catalog.shop GET /report"}; !slices.Equal(calls["batch"], want) {
		t.Errorf("batch's calls %q, want %q", calls["batch"], want)
	}
	r := m.run(t, m.mustRun(t, "", "policy", "suggest", "-n", "shop", "-o", "yaml"), "apply", "-f", "-")
	if r.code != cli.ExitOK {
		t.Fatalf("apply suggested: %v", r)
	}

	// coverage: everything allowed (audit changes no decision), nothing
	// would be denied.
	out := m.mustRun(t, "", "policy", "coverage", "-n", "shop", "-o", "json")
	if !strings.Contains(out, `"wouldDeny": 0`) || strings.Contains(out, `"wouldDeny": 1`) || !strings.Contains(out, `"mesh default"`) {
		t.Errorf("coverage after applying the audit Intents:\n%s", out)
	}

	// promote: frontend's Intent to enforce; its server's policy enforces.
	out = m.mustRun(t, "", "policy", "promote", "intent/frontend", "-n", "shop")
	if !strings.Contains(out, "promoted to enforce") {
		t.Errorf("promote: %s", out)
	}
	deadline = time.Now().Add(15 * time.Second)
	for call(batch, "GET", "/admin") != http.StatusForbidden {
		if time.Now().After(deadline) {
			t.Fatal("after promote, batch's undeclared GET /admin is still allowed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 100 {
		if c := call(front, "GET", "/items/7"); c != 200 {
			t.Fatalf("request %d: declared GET /items/7 got %d after promote", i, c)
		}
		if c := call(batch, "GET", "/report"); c != 200 {
			t.Fatalf("request %d: batch's declared GET /report got %d after promote", i, c)
		}
		if c := call(front, "DELETE", "/items/7"); c != http.StatusForbidden {
			t.Fatalf("request %d: undeclared DELETE got %d after promote", i, c)
		}
	}

	// A policy that would deny observed traffic is not promoted without
	// --force.
	m.mustRun(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-batch, namespace: shop}\nspec:\n  selector: {service: catalog}\n  action: DENY\n  enforcement: audit\n  rules: [{from: [{services: [batch]}]}]\n", "apply", "-f", "-")
	r = m.run(t, "", "policy", "promote", "no-batch", "-n", "shop")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "would deny") || !strings.Contains(r.stderr, "batch.shop -> catalog.shop GET /report") {
		t.Fatalf("promote of a policy denying observed traffic: %v\nwant it refused, naming the traffic", r)
	}
	if c := call(batch, "GET", "/report"); c != 200 {
		t.Fatalf("the refused promote changed a decision: %d", c)
	}
	r = m.run(t, "", "policy", "promote", "no-batch", "-n", "shop", "--force")
	if r.code != cli.ExitOK || !strings.Contains(r.stderr, "warning") {
		t.Fatalf("promote --force: %v", r)
	}
	deadline = time.Now().Add(15 * time.Second)
	for call(batch, "GET", "/report") != http.StatusForbidden {
		if time.Now().After(deadline) {
			t.Fatal("after promote --force, no-batch does not deny")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A generated policy is promoted through its Intents.
	r = m.run(t, "", "policy", "promote", "intents-catalog", "-n", "shop")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "intent/NAME") {
		t.Errorf("promote of a generated policy: %v", r)
	}
}
