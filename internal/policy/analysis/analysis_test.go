package analysis

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

const td = "trellis.local"

// policies decodes and validates YAML documents as apply stores them.
func policies(t *testing.T, docs ...string) []resource.Object {
	t.Helper()
	objs, err := resource.Decode([]byte(strings.Join(docs, "\n---\n")), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := resource.Validate(&objs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return objs
}

func authz(ns, name, spec string) string {
	return "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec
}

// testMesh: catalog.shop lets frontend GET /items and anyone in shop
// reach port 8443; its v2 proxy is also open to cart.
func testMesh(t *testing.T, mtls string) *Mesh {
	spec, err := resource.MeshSpecOf(new(resource.DefaultMesh()))
	if err != nil {
		t.Fatal(err)
	}
	spec.MTLS.Mode = mtls
	return &Mesh{
		Spec: spec,
		Policies: policies(t,
			authz("shop", "reads", "{selector: {service: catalog}, rules: [{from: [{services: [frontend]}], to: [{methods: [GET], paths: [/items]}]}, {from: [{namespaces: [shop]}], to: [{ports: [8443]}]}]}"),
			authz("shop", "v2-cart", "{selector: {service: catalog, matchLabels: {version: v2}}, rules: [{from: [{services: [cart]}]}]}"),
		),
		Proxies: []Proxy{
			{SPIFFEID: "spiffe://trellis.local/ns/shop/sa/frontend", Service: "frontend", Namespace: "shop"},
			{SPIFFEID: "spiffe://trellis.local/ns/shop/sa/web", Service: "frontend", Namespace: "shop"},
			{SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", Labels: map[string]string{"version": "v1"}},
			{SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", Labels: map[string]string{"version": "v2"}},
		},
	}
}

// get is GET path on port 8080.
func get(path string) policy.Request {
	return policy.Request{HTTP: true, Method: "GET", Path: path, Port: 8080}
}

func TestWhatIf(t *testing.T) {
	v1 := map[string]string{"version": "v1"}
	for _, tc := range []struct {
		name     string
		mtls     string
		q        Query
		decision string
		cause    string
		from     string
		caveats  Caveats
	}{
		{"caller by a SPIFFE ID serving one service",
			resource.MTLSStrict,
			Query{FromID: "spiffe://trellis.local/ns/shop/sa/web", ToService: "catalog", ToNamespace: "shop", Labels: v1, Request: get("/items")},
			"ALLOW", "allow-policy", "spiffe://trellis.local/ns/shop/sa/web", Caveats{}},
		{"caller service with two identities: the first is checked",
			resource.MTLSStrict,
			Query{FromService: "frontend", FromNamespace: "shop", ToService: "catalog", ToNamespace: "shop", Labels: v1, Request: get("/items")},
			"ALLOW", "allow-policy", "spiffe://trellis.local/ns/shop/sa/frontend",
			Caveats{CallerIdentities: []string{"spiffe://trellis.local/ns/shop/sa/frontend", "spiffe://trellis.local/ns/shop/sa/web"}}},
		{"caller service without proxies: its identity is assumed",
			resource.MTLSStrict,
			Query{FromService: "cart", FromNamespace: "shop", ToService: "catalog", ToNamespace: "shop", Request: get("/")},
			"DENY", "no-allow-match", "spiffe://trellis.local/ns/shop/sa/cart",
			Caveats{AssumedPrincipal: true, LabelDecisions: []LabelDecision{
				{Labels{"version": "v1"}, policy.Decision{Cause: policy.CauseNoAllowMatch, Rule: -1, Reason: "no ALLOW policy matched"}},
				{Labels{"version": "v2"}, policy.Decision{Allow: true, Cause: policy.CauseAllow, Policy: "shop/v2-cart", Rule: 0, Reason: "allowed by an ALLOW policy"}},
			}}},
		{"callee without proxies: no labels",
			resource.MTLSStrict,
			Query{FromService: "frontend", FromNamespace: "shop", ToService: "db", ToNamespace: "shop", Request: get("/")},
			"DENY", "mesh-default", "spiffe://trellis.local/ns/shop/sa/frontend",
			Caveats{CallerIdentities: []string{"spiffe://trellis.local/ns/shop/sa/frontend", "spiffe://trellis.local/ns/shop/sa/web"}, UnknownCallee: true}},
		{"no port while a selecting policy names ports",
			resource.MTLSStrict,
			Query{FromID: "spiffe://trellis.local/ns/shop/sa/catalog", ToService: "catalog", ToNamespace: "shop", Labels: v1, Request: policy.Request{}},
			"DENY", "no-allow-match", "spiffe://trellis.local/ns/shop/sa/catalog", Caveats{PortPolicies: []string{"shop/reads"}}},
		{"plaintext under STRICT: refused before any policy",
			resource.MTLSStrict,
			Query{Plaintext: true, ToService: "catalog", ToNamespace: "shop", Request: get("/items")},
			"DENY", CauseMTLSRequired, "", Caveats{}},
		{"plaintext under PERMISSIVE: no identity",
			resource.MTLSPermissive,
			Query{Plaintext: true, ToService: "catalog", ToNamespace: "shop", Labels: v1, Request: get("/items")},
			"DENY", "no-allow-match", "", Caveats{PlaintextPermitted: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := WhatIf(testMesh(t, tc.mtls), &tc.q, td)
			if err != nil {
				t.Fatal(err)
			}
			if res.Decision != tc.decision || res.Cause != tc.cause || res.From != tc.from {
				t.Errorf("got %s (%s) from %q, want %s (%s) from %q", res.Decision, res.Cause, res.From, tc.decision, tc.cause, tc.from)
			}
			if !reflect.DeepEqual(res.Caveats, tc.caveats) {
				t.Errorf("caveats:\ngot  %+v\nwant %+v", res.Caveats, tc.caveats)
			}
		})
	}
}

func TestWhatIfRequest(t *testing.T) {
	q := Query{FromID: "spiffe://trellis.local/ns/shop/sa/web", ToService: "catalog", ToNamespace: "shop",
		Labels: map[string]string{"version": "v1"}, Request: get("/a/../items"), Header: http.Header{"X-Tenant": {"acme"}}}
	res, err := WhatIf(testMesh(t, resource.MTLSStrict), &q, td)
	if err != nil {
		t.Fatal(err)
	}
	want := RequestSummary{Protocol: "HTTP", Port: 8080, Method: "GET", Path: "/items", Headers: map[string]string{"x-tenant": "acme"}}
	if !reflect.DeepEqual(res.Request, want) || res.Decision != "ALLOW" {
		t.Errorf("got %s for %+v, want ALLOW for %+v", res.Decision, res.Request, want)
	}
	if want := []string{"shop/reads"}; !reflect.DeepEqual(res.Selecting, want) || res.FromService != "frontend.shop" {
		t.Errorf("selecting %v from %q, want %v from frontend.shop", res.Selecting, res.FromService, want)
	}
}

func TestWhatIfErrors(t *testing.T) {
	m := testMesh(t, resource.MTLSStrict)
	q := Query{FromID: "spiffe://trellis.local/ns/shop/sa/web", ToService: "catalog", ToNamespace: "shop", Request: get("/a%2fb")}
	if _, err := WhatIf(m, &q, td); !policy.IsPathError(err) {
		t.Errorf("path /a%%2fb: got %v, want a *policy.PathError", err)
	}
	m.Policies = append(m.Policies, m.Policies[0])
	q.Request = get("/")
	var ce *CompileError
	if _, err := WhatIf(m, &q, td); !errors.As(err, &ce) {
		t.Errorf("a policy defined twice: got %v, want a *CompileError", err)
	}
}

// A change shadowed by a live policy is found; a finding among live
// policies alone is counted, not reported; a change replaces the live
// policy of its name.
func TestLintChanges(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	live := &Mesh{Policies: policies(t,
		authz("shop", "a", "{rules: [{to: [{methods: [GET]}]}]}"),
		authz("shop", "b", "{rules: [{to: [{methods: [GET]}]}]}"),
		authz("shop", "c", "{rules: [{to: [{methods: [PUT]}]}]}"),
	)}
	changes := policies(t,
		authz("shop", "c", "{rules: [{to: [{methods: [GET], paths: [/x]}]}]}"),
		authz("shop", "d", "{rules: [{to: [{methods: [POST]}]}]}"),
	)
	rep := LintChanges(changes, live, now, td)
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.Kind+" "+f.Policy+" "+f.OtherPolicy)
	}
	want := []string{"shadowed shop/c shop/a"}
	if !reflect.DeepEqual(got, want) || rep.Hidden != 1 || rep.Linted != 4 || rep.Changed != 2 || rep.Unchanged != 2 {
		t.Errorf("got %v, %d hidden, %d linted (%d changed, %d unchanged); want %v, 1 hidden, 4 linted (2, 2)",
			got, rep.Hidden, rep.Linted, rep.Changed, rep.Unchanged, want)
	}
	if all := Lint(live, now, td); len(all.Findings) != 1 || all.Hidden != 0 || all.Linted != 3 {
		t.Errorf("Lint of the live policies: %+v, want the one shadowed rule of shop/b", all)
	}
}
