package policy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/trellismesh/trellis/internal/resource"
)

// benchMesh builds n policies the way a real mesh spreads them: n/10
// namespaces of 10 services each. In each namespace, one namespace-wide
// DENY (callers from untrusted namespaces may not reach /admin) and nine
// per-service ALLOWs of three rules each; the first namespace is
// trellis-system, whose DENY is mesh-wide. Service i is called by service
// i-1 of its namespace, by its namespace's admin and by monitoring.
func benchMesh(tb testing.TB, n int) []resource.Object {
	tb.Helper()
	var objs []resource.Object
	add := func(ns, name string, spec map[string]any) {
		raw, err := json.Marshal(spec)
		if err != nil {
			tb.Fatal(err)
		}
		o := resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindAuthorizationPolicy,
			Metadata: resource.Metadata{Name: name, Namespace: ns}, Spec: raw}
		if err := resource.Validate(&o); err != nil {
			tb.Fatal(err)
		}
		objs = append(objs, o)
	}
	for i := 0; len(objs) < n; i++ {
		ns := fmt.Sprintf("ns-%d", i)
		if i == 0 {
			ns = MeshNamespace
		}
		add(ns, "deny-untrusted-admin", map[string]any{
			"action": "DENY",
			"rules": []any{map[string]any{
				"from": []any{map[string]any{"notNamespaces": []string{ns, MeshNamespace, "monitoring"}}},
				"to":   []any{map[string]any{"paths": []string{"/admin", "/admin/*"}}},
			}},
		})
		for s := 1; s < 10 && len(objs) < n; s++ {
			svc := fmt.Sprintf("svc-%d", s)
			add(ns, "allow-"+svc, map[string]any{
				"selector": map[string]any{"service": svc},
				"rules": []any{
					map[string]any{
						"from": []any{map[string]any{"principals": []string{fmt.Sprintf("spiffe://trellis.local/ns/%s/sa/admin", ns)}}},
						"to":   []any{map[string]any{"methods": []string{"GET", "HEAD"}, "paths": []string{"/admin", "/admin/*", "/health"}}},
					},
					map[string]any{
						"from": []any{map[string]any{"namespaces": []string{"monitoring"}}},
						"to":   []any{map[string]any{"ports": []int{9090}, "paths": []string{"/metrics"}}},
					},
					map[string]any{
						"from": []any{map[string]any{"principals": []string{fmt.Sprintf("spiffe://trellis.local/ns/%s/sa/svc-%d", ns, s-1)}}},
						"to":   []any{map[string]any{"methods": []string{"GET", "POST"}, "paths": []string{"/api/*"}}},
						"when": []any{map[string]any{"key": "request.headers[x-tenant]", "notValues": []string{"blocked"}}},
					},
				},
			})
		}
	}
	return objs
}

// benchTarget is a workload in the middle of benchMesh(n) and a request
// that its last ALLOW rule allows, after the DENYs have been checked.
func benchTarget(n int) (Workload, Request) {
	ns := fmt.Sprintf("ns-%d", (n/10)/2)
	if ns == "ns-0" {
		ns = MeshNamespace
	}
	h := http.Header{}
	h.Set("X-Tenant", "acme")
	h.Set("Content-Type", "application/json")
	w := Workload{Namespace: ns, Service: "svc-5", Labels: map[string]string{"app": "svc-5", "version": "v1"}}
	r := Request{
		Principal: fmt.Sprintf("spiffe://trellis.local/ns/%s/sa/svc-4", ns),
		HTTP:      true, Port: 8080, Method: "POST", Path: "/api/orders", Host: "svc-5." + ns,
		Header: h.Get,
	}
	return w, r
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		e, err := Compile(benchMesh(b, n), Options{TrustDomain: "trellis.local"})
		if err != nil {
			b.Fatal(err)
		}
		w, r := benchTarget(n)
		if d := e.Decide(&w, &r); !d.Allow || d.Rule != 2 {
			b.Fatalf("benchmark request: %+v, want allowed by rule 2", d)
		}
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(&w, &r)
			}
		})
		tcpReq := Request{Principal: r.Principal, Port: 5432}
		b.Run(fmt.Sprintf("policies=%d/tcp", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(&w, &tcpReq)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	objs := benchMesh(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(objs, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	objs := benchMesh(t, 1000)
	w, r := benchTarget(1000)
	// Audit-mode policies on the target, to check that reporting them
	// does not allocate either.
	objs = append(objs, mustPolicies(t,
		w.Namespace+"/audit-deny: {action: DENY, enforcement: audit, rules: [{to: [{paths: ['/api/*']}]}]}",
		w.Namespace+"/audit-allow: {enforcement: audit, selector: {matchLabels: {app: svc-5}}, rules: [{when: [{key: 'request.headers[x-tenant]', values: [acme]}]}]}",
	)...)
	e, err := Compile(objs, Options{TrustDomain: "trellis.local"})
	if err != nil {
		t.Fatal(err)
	}
	tcpReq := Request{Principal: r.Principal, Port: 5432}
	plain := Request{HTTP: true, Port: 8080, Method: "GET", Path: "/admin/x?y=1", Host: "Svc-5"}
	unknown := Workload{Namespace: "nowhere", Service: "none"}
	reports := 0
	count := func(AuditResult) { reports++ }
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"http", func() { e.Decide(&w, &r) }},
		{"tcp", func() { e.Decide(&w, &tcpReq) }},
		{"plaintext", func() { e.Decide(&w, &plain) }},
		{"unknown workload", func() { e.Decide(&unknown, &r) }},
		{"nil", func() { e.Decide(nil, nil) }},
		{"audit", func() { e.DecideAudit(&w, &r, count) }},
	} {
		if got := testing.AllocsPerRun(100, tc.f); got != 0 {
			t.Errorf("%s: %v allocations per decision, want 0", tc.name, got)
		}
	}
	if reports == 0 {
		t.Error("audit callback never called")
	}
}
