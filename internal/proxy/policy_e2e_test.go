package proxy_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

type answer struct {
	code     int
	body     string
	deniedBy string
}

// call makes one request through a client proxy's upstream listener.
func call(t *testing.T, hc *http.Client, upstream, method, path string, header ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+upstream+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{code: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header.Get("X-Trellis-Denied-By")}
}

// expect polls until the call answers want (policies propagate
// asynchronously), then checks body and deny header.
func expect(t *testing.T, hc *http.Client, upstream, method, path string, want answer, header ...string) {
	t.Helper()
	var got answer
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = call(t, hc, upstream, method, path, header...)
		if got.code == want.code && got.deniedBy == want.deniedBy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: got %d %q denied-by %q, want %d denied-by %q", method, path, got.code, got.body, got.deniedBy, want.code, want.deniedBy)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if want.body != "" && got.body != want.body {
		t.Errorf("%s %s: body %q, want %q", method, path, got.body, want.body)
	}
}

const denied = "RBAC: access denied\n"

func TestPoliciesThroughProxies(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	up := proxy.Upstream{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}
	frontend := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{up}})
	admin := meshtest.StartProxy(t, cp, proxy.Config{Service: "admin", Upstreams: []proxy.Upstream{up}})
	hc := &http.Client{Timeout: 5 * time.Second}
	fe, ad := frontend.UpstreamAddr(0), admin.UpstreamAddr(0)

	// Zero trust by default: no policy, mesh default deny.
	expect(t, hc, fe, "GET", "/items", answer{code: 403, body: denied})

	// ALLOW by principal, method and path.
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET], paths: ["/items", "/items/*"]}]
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/admin"]}]
    when: [{key: "request.headers[x-tenant]", values: [acme]}]
`)
	expect(t, hc, fe, "GET", "/items", answer{code: 200, body: "ok"})
	expect(t, hc, fe, "GET", "/items/7", answer{code: 200})
	expect(t, hc, fe, "POST", "/items", answer{code: 403, body: denied})
	expect(t, hc, fe, "GET", "/admin", answer{code: 403})
	// Header condition: admin gets in only as tenant acme.
	expect(t, hc, ad, "GET", "/items", answer{code: 403})
	expect(t, hc, ad, "GET", "/items", answer{code: 403}, "X-Tenant", "other")
	expect(t, hc, ad, "DELETE", "/items", answer{code: 200}, "X-Tenant", "acme")

	// DENY overrides ALLOW, and the 403 names the policy.
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-secrets, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  rules:
  - to: [{paths: ["/items/secret*"]}]
`)
	expect(t, hc, fe, "GET", "/items/secret", answer{code: 403, body: denied, deniedBy: "shop/no-secrets"})
	expect(t, hc, fe, "GET", "/items/7", answer{code: 200})

	// The mesh can hide the policy name.
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {hidePolicy: true}}\n")
	expect(t, hc, fe, "GET", "/items/secret", answer{code: 403, body: denied, deniedBy: ""})

	// Audit mode: the would-be deny is recorded, the request goes through.
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: trial-deny, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  enforcement: audit
  rules:
  - to: [{paths: ["/items/7"]}]
`)
	series := `trellis_authz_decisions_total{decision="deny",mode="audit",policy="shop/trial-deny"}`
	testutil.Eventually(t, "the audit-mode would-deny to be counted", func() bool {
		if a := call(t, hc, fe, "GET", "/items/7"); a.code != 200 {
			t.Fatalf("an audit-mode DENY changed the decision: %d %q", a.code, a.body)
		}
		return scrape(t, catalog, series) > 0
	})
}

// scrape returns the value of one exact series on a proxy's /metrics, or 0.
func scrape(t *testing.T, p *proxy.Proxy, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestPoliciesOnTCP: HTTP-only conditions never open a TCP port; a rule
// without them does.
func TestPoliciesOnTCP(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	db := meshtest.StartProxy(t, cp, proxy.Config{Service: "db", Protocol: meshconfig.ProtocolTCP, AppAddr: l.Addr().String()})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "db", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	echo := func() bool {
		c, err := net.DialTimeout("tcp", client.UpstreamAddr(0), 2*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && line == "ping\n"
	}
	// With the mesh default allow, a workload no policy selects takes the
	// connection: the denial below is the policy's doing, not the default's.
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {authorization: {default: allow}}
`)
	testutil.Eventually(t, "TCP echo through the mesh under the mesh default allow", echo)
	// An ALLOW whose only rule needs a path must not open the TCP port.
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-http-only, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{paths: ["/x"]}]
`)
	testutil.Eventually(t, "the path-only policy in db's proxy config", func() bool { return configHas(t, db, "db-http-only") })
	for i := range 20 {
		if echo() {
			t.Fatalf("connection %d: a path-only ALLOW rule let a TCP connection through", i)
		}
	}
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-http-only, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
`)
	testutil.Eventually(t, "TCP echo through the mesh once allowed", echo)
}

func configHas(t *testing.T, p *proxy.Proxy, s string) bool {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr() + "/config")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), s)
}

// TestPolicyChangeUnderTraffic: a policy change applied while requests flow
// over kept-alive connections takes effect without dropping any of them.
func TestPolicyChangeUnderTraffic(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	policy := func(methods string) string {
		return `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-calls, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [` + methods + `]}]
`
	}
	meshtest.MustApply(t, cp, policy("GET"))
	hc := &http.Client{Timeout: 5 * time.Second}
	up := client.UpstreamAddr(0)
	expect(t, hc, up, "GET", "/", answer{code: 200})
	expect(t, hc, up, "POST", "/", answer{code: 403})

	var gets, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if a := call(t, hc, up, "GET", "/"); a.code != 200 {
					failures.Add(1)
					t.Logf("GET during policy change: %d %q", a.code, a.body)
				}
				gets.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	meshtest.MustApply(t, cp, policy("GET, POST"))
	expect(t, hc, up, "POST", "/", answer{code: 200})
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() > 0 || gets.Load() < 50 {
		t.Errorf("GETs during the change: %d, failed %d; want none failed", gets.Load(), failures.Load())
	}
}

func TestNormalizePathForPolicies(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	var seen sync.Map
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.Path, true)
		io.WriteString(w, "ok")
	}))
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: open, namespace: shop}
spec:
  selector: {service: catalog}
  rules: [{}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  rules:
  - to: [{paths: ["/admin", "/admin/*"]}]
`)
	hc := &http.Client{Timeout: 5 * time.Second}
	up := client.UpstreamAddr(0)
	expect(t, hc, up, "GET", "/items", answer{code: 200})
	// Both policies are in the proxy's config (a push round may carry
	// only the first of them).
	expect(t, hc, up, "GET", "/admin", answer{code: 403, deniedBy: "shop/no-admin"})
	// Raw request lines, so no client cleans them first.
	for _, target := range []string{"/items/../admin", "//admin", "/./admin/x", "/items/%2e%2e/admin", "/admin/"} {
		c, err := net.Dial("tcp", up)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s: %d, want 403 (a dot segment or doubled slash must not dodge the DENY on /admin)", target, resp.StatusCode)
		}
	}
	for _, target := range []string{"/items%3F/../admin", "/items%23x"} {
		c, err := net.Dial("tcp", up)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400 (an encoded ? or # in the path is refused)", target, resp.StatusCode)
		}
	}
	if _, ok := seen.Load("/admin"); ok {
		t.Error("the app was reached at /admin")
	}
}

// TestDenialsReachTheAuditSink: every denied request becomes an authz.deny
// event from the catalog proxy, through the collector embedded in the
// control plane, into a file sink; the count matches the proxy's counter.
func TestDenialsReachTheAuditSink(t *testing.T) {
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := meshtest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + out}})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	meshtest.MustApply(t, cp, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reads-only, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET]}]
`)
	hc := &http.Client{Timeout: 5 * time.Second}
	up := client.UpstreamAddr(0)
	expect(t, hc, up, "GET", "/", answer{code: 200})
	const denials = 25
	for i := range denials {
		if a := call(t, hc, up, "DELETE", "/items/"+strconv.Itoa(i)); a.code != 403 {
			t.Fatalf("DELETE: %d, want 403", a.code)
		}
	}
	// Denials before the policy arrived (mesh default deny) count too: the
	// sink must hold exactly what the proxy counted, DELETEs included.
	var deny, deletes []map[string]any
	testutil.Eventually(t, "every denial in the audit sink", func() bool {
		deny, deletes = deny[:0], deletes[:0]
		data, _ := os.ReadFile(out)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil && ev["kind"] == "authz.deny" {
				deny = append(deny, ev)
				if ev["method"] == "DELETE" {
					deletes = append(deletes, ev)
				}
			}
		}
		return len(deletes) >= denials
	})
	if len(deletes) != denials {
		t.Errorf("sink has %d DELETE denials, want %d", len(deletes), denials)
	}
	counted := scrape(t, catalog, `trellis_authz_decisions_total{decision="deny",mode="enforce",policy=""}`)
	if int(counted) != len(deny) {
		t.Errorf("catalog proxy counted %v denials, the sink has %d", counted, len(deny))
	}
	ev := deletes[0]
	for k, want := range map[string]string{
		"reporter": "spiffe://trellis.local/ns/shop/sa/catalog", "source_id": "spiffe://trellis.local/ns/shop/sa/frontend",
		"destination_service": "catalog", "method": "DELETE", "decision": "deny",
	} {
		if got, _ := ev[k].(string); got != want {
			t.Errorf("event %s = %q, want %q (event %v)", k, got, want, ev)
		}
	}
}
