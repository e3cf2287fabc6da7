package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

var fuzzSeeds = []string{
	`apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog, namespace: shop}
spec:
  selector: {service: catalog, matchLabels: {tier: backend}}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend", "spiffe://trellis.local/ns/ops/*"], notNamespaces: ["kube-*"]}]
    to:   [{methods: [GET], paths: ["/items", "/items/*"], ports: [8080], hosts: ["*.shop"]}]
    when: [{key: "request.headers[x-tenant]", values: [a, b], notValues: ["*-test"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: trellis-system}
spec: {action: DENY, rules: [{to: [{paths: ["/admin*"]}]}, {from: [{notPrincipals: ["*"]}]}]}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: trial, namespace: shop}
spec: {enforcement: audit, rules: [{to: [{notPorts: [22], notMethods: [DELETE], notHosts: ["*.internal"]}]}]}
`,
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"rules":[{}]}}`,
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a","namespace":"x"},"spec":{"selector":{"service":"s"}}}`,
	"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: trellis.dev/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a}, spec: {action: DENY, rules: [{to: [{notPorts: [22]}]}]}}\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n",
}

// FuzzCompileDecide feeds whatever resource.Decode and Validate accept to
// Compile, Decide and Lint, which must not panic and must return consistent
// decisions.
func FuzzCompileDecide(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), "spiffe://trellis.local/ns/shop/sa/frontend", "/items/1?x", "catalog.shop", "a", 8080, true)
		f.Add([]byte(s), "", "", "", "", 22, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, principal, path, host, header string, port int, http bool) {
		objs, err := resource.Decode(data, "fuzz.yaml")
		if err != nil {
			return
		}
		var valid []resource.Object
		for i := range objs {
			if resource.Validate(&objs[i]) == nil && objs[i].Kind == resource.KindAuthorizationPolicy {
				valid = append(valid, objs[i])
			}
		}
		Lint(objs, []Workload{{Namespace: "shop", Service: "catalog"}}, time.Now(), "trellis.local")
		e, err := Compile(valid, Options{TrustDomain: "trellis.local"})
		if err != nil {
			if strings.Contains(err.Error(), "defined twice") {
				return
			}
			t.Fatalf("Compile rejected validated policies: %v", err)
		}
		workloads := []Workload{{}, {Namespace: "shop", Service: "catalog", Labels: map[string]string{"tier": "backend"}}}
		for i := range valid {
			spec, _ := resource.AuthorizationPolicySpecOf(&valid[i])
			workloads = append(workloads, Workload{Namespace: valid[i].Metadata.Namespace, Service: spec.Selector.Service, Labels: spec.Selector.MatchLabels})
		}
		r := Request{Principal: principal, HTTP: http, Port: port, Method: "GET", Path: path, Host: host,
			Header: func(string) string { return header }}
		for i := range workloads {
			w := &workloads[i]
			d := e.DecideAudit(w, &r, func(a AuditResult) {
				if a.Policy == "" || a.Matched != (a.Rule >= 0) {
					t.Fatalf("inconsistent audit result %+v", a)
				}
			})
			if d != e.Decide(w, &r) {
				t.Fatal("Decide and DecideAudit disagree")
			}
			named := d.Cause == CauseDeny || d.Cause == CauseAllow
			if named != (d.Policy != "") || named != (d.Rule >= 0) || d.Reason == "" ||
				d.Cause == CauseDeny && d.Allow || d.Cause == CauseAllow && !d.Allow || d.Cause == CauseNoAllowMatch && d.Allow {
				t.Fatalf("inconsistent decision %+v", d)
			}
		}
	})
}
