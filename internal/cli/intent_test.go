package cli_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// An Intent through the whole loop with real proxies: applied, compiled
// into a generated policy that the proxies enforce (the declared call
// allowed, every other call from the client and every call from another
// service denied, hundreds of each), shown by get and policy check with
// the Intent behind the rule, protected from users' edits, and gone with
// the Intent.
func TestIntentCompiledAndEnforced(t *testing.T) {
	m := startMesh(t)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(l)
	t.Cleanup(func() { app.Close() })
	up := []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: l.Addr().String()})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: up})
	batch := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "batch", Upstreams: up})

	// One connection per caller, kept alive, so that hundreds of requests
	// cost little; a fresh one after the proxy closes it.
	type client struct {
		addr string
		c    net.Conn
		br   *bufio.Reader
	}
	send := func(cl *client, method, path string) int {
		t.Helper()
		for attempt := 0; ; attempt++ {
			if cl.c == nil {
				c, err := net.Dial("tcp", cl.addr)
				if err != nil {
					t.Fatal(err)
				}
				cl.c, cl.br = c, bufio.NewReader(c)
			}
			_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err := io.WriteString(cl.c, method+" "+path+" HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: 0\r\n\r\n")
			var resp *http.Response
			if err == nil {
				resp, err = http.ReadResponse(cl.br, nil)
			}
			if err != nil {
				cl.c.Close()
				cl.c = nil
				if attempt < 1 {
					continue // a kept-alive connection the proxy had closed
				}
				t.Fatalf("%s %s: %v", method, path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Close {
				cl.c.Close()
				cl.c = nil
			}
			return resp.StatusCode
		}
	}
	fc, bc := &client{addr: front.UpstreamAddr(0)}, &client{addr: batch.UpstreamAddr(0)}
	t.Cleanup(func() {
		for _, cl := range []*client{fc, bc} {
			if cl.c != nil {
				cl.c.Close()
			}
		}
	})
	waitFor := func(cl *client, path string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for send(cl, "GET", path) != want {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s never answered %d within 15s", path, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The mesh denies by default: nothing passes before the Intent.
	waitFor(fc, "/items", http.StatusForbidden)

	r := m.run(t, "", "apply", "-f", "testdata/intent/frontend.yaml")
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "Intent/shop/frontend created") || strings.Contains(r.stderr, "warning") {
		t.Fatalf("apply intent: %v\nwant created, no warning (every service is known)", r)
	}
	waitFor(fc, "/items", http.StatusOK)

	counts := map[string]int{}
	for i := range 300 {
		cases := []struct {
			cl           *client
			method, path string
			want         int
		}{
			{fc, "GET", "/items/" + string(rune('a'+i%26)), http.StatusOK},
			{fc, "POST", "/items", http.StatusForbidden},
			{fc, "GET", "/admin", http.StatusForbidden},
			{bc, "GET", "/items", http.StatusForbidden},
		}
		for _, c := range cases {
			got := send(c.cl, c.method, c.path)
			if got != c.want {
				t.Fatalf("request %d: %s %s from %s: got %d, want %d", i, c.method, c.path, map[*client]string{fc: "frontend", bc: "batch"}[c.cl], got, c.want)
			}
			counts[c.method+" "+c.path[:min(len(c.path), 6)]]++
		}
	}

	// get: the generated policy, with the Intent behind it.
	out := m.mustRun(t, "", "get", "authz", "-n", "shop")
	if !strings.Contains(out, "intents-catalog") || !strings.Contains(out, "shop/frontend") {
		t.Errorf("get authz -n shop:\n%s\nwant intents-catalog generated from shop/frontend", out)
	}
	out = m.mustRun(t, "", "get", "authz", "intents-catalog", "-n", "shop", "-o", "json")
	var pol struct {
		Metadata struct {
			Labels      map[string]string
			Annotations map[string]string
		}
		Spec struct {
			Selector struct{ Service string }
			Rules    []json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(out), &pol); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	if pol.Metadata.Labels["trellis.dev/generated-by"] != "intent" || pol.Spec.Selector.Service != "catalog" || len(pol.Spec.Rules) != 1 ||
		pol.Metadata.Annotations["trellis.dev/rule-sources"] != `["shop/frontend"]` {
		t.Errorf("generated policy:\n%s", out)
	}

	// policy check names the Intent, in text and in JSON.
	out = m.mustRun(t, "", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop", "--method", "GET", "--path", "/items/1")
	if !strings.Contains(out, "ALLOW") || !strings.Contains(out, "shop/intents-catalog rule 0 (from Intent shop/frontend)") {
		t.Errorf("policy check:\n%s", out)
	}
	out = m.mustRun(t, "", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop", "--path", "/items/1", "-o", "json")
	if !strings.Contains(out, `"intent": "shop/frontend"`) {
		t.Errorf("policy check -o json:\n%s", out)
	}

	// Users cannot edit or delete the generated policy.
	r = m.run(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: intents-catalog, namespace: shop}\nspec:\n  selector: {service: catalog}\n  rules: [{}]\n", "apply", "-f", "-")
	if r.code == cli.ExitOK || !strings.Contains(r.stderr, "generated from Intents") {
		t.Errorf("apply over the generated policy: %v\nwant it refused, naming Intents", r)
	}
	r = m.run(t, "", "delete", "authz", "intents-catalog", "-n", "shop")
	if r.code == cli.ExitOK || !strings.Contains(r.stderr, "generated from Intents") {
		t.Errorf("delete of the generated policy: %v\nwant it refused, naming Intents", r)
	}
	if send(fc, "GET", "/items") != http.StatusOK {
		t.Error("the refused writes changed what the proxies enforce")
	}

	// An Intent naming a service nobody has joined as: accepted, warned.
	r = m.run(t, "apiVersion: trellis.dev/v1alpha1\nkind: Intent\nmetadata: {name: reports, namespace: shop}\nspec:\n  client: {service: frontend}\n  calls: [{service: ghost.ops}]\n", "apply", "-f", "-")
	if r.code != cli.ExitOK || !strings.Contains(r.stderr, "warning: Intent shop/reports: spec.calls[0]: service ghost.ops is not known") {
		t.Errorf("apply intent to an unknown service: %v\nwant it accepted with a warning", r)
	}
	if out := m.mustRun(t, "", "get", "authz", "-A"); !strings.Contains(out, "intents-ghost") {
		t.Errorf("get authz -A:\n%s\nwant ops/intents-ghost generated", out)
	}

	// Deleting the Intent removes its policy; the mesh default denies again.
	m.mustRun(t, "", "delete", "intent", "frontend", "-n", "shop")
	if out := m.mustRun(t, "", "get", "authz", "-n", "shop"); strings.Contains(out, "intents-catalog") {
		t.Errorf("after deleting the intent, get authz -n shop still lists its policy:\n%s", out)
	}
	waitFor(fc, "/items", http.StatusForbidden)
	t.Logf("requests by kind: %v", counts)
}
