package policy

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/resource"
)

const (
	frontend = "spiffe://trellis.local/ns/shop/sa/frontend"
	backend  = "spiffe://trellis.local/ns/shop/sa/backend"
	evil     = "spiffe://trellis.local/ns/evil/sa/mallory"
	partner  = "spiffe://partner.org/ns/shop/sa/frontend"
)

var (
	catalog   = Workload{Namespace: "shop", Service: "catalog", Labels: map[string]string{"tier": "backend", "version": "v1"}}
	cart      = Workload{Namespace: "shop", Service: "cart"}
	unlabeled = Workload{Namespace: "shop", Service: "catalog"}
)

// mustPolicies builds validated policies from "namespace/name: spec" lines,
// spec being a YAML flow mapping.
func mustPolicies(t testing.TB, lines ...string) []resource.Object {
	t.Helper()
	var docs []string
	for _, l := range lines {
		ref, spec, ok := strings.Cut(l, ": ")
		ns, name, ok2 := strings.Cut(ref, "/")
		if !ok || !ok2 {
			t.Fatalf("bad policy line %q", l)
		}
		docs = append(docs, fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", name, ns, spec))
	}
	objs, err := resource.Decode([]byte(strings.Join(docs, "---\n")), "test.yaml")
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

func get(principal, path string) Request {
	return Request{Principal: principal, HTTP: true, Port: 8080, Method: "GET", Path: path, Host: "catalog.shop"}
}

func call(principal, method, path string) Request {
	r := get(principal, path)
	r.Method = method
	return r
}

func withHost(r Request, host string) Request { r.Host = host; return r }

func withHeaders(r Request, kv ...string) Request {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	r.Header = h.Get
	return r
}

func tcp(principal string, port int) Request {
	return Request{Principal: principal, Port: port}
}

func withService(r Request, svc string) Request { r.SourceService = svc; return r }

func withPort(r Request, port int) Request { r.Port = port; return r }

// semanticsCase is one row of the table in docs/policy.md.
type semanticsCase struct {
	id           string
	policies     []string
	defaultAllow bool
	w            *Workload // catalog when nil
	r            Request
	allow        bool
	cause        Cause
	policy       string
	rule         int // when policy is set
	audits       []AuditResult
}

const allowAll = "shop/allow-all: {rules: [{}]}"

var semanticsCases = []semanticsCase{
	// Selection.
	{id: "S1", policies: []string{"shop/p: {selector: {service: catalog}, rules: [{}]}"},
		r: get(frontend, "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "S2", policies: []string{"shop/p: {selector: {service: catalog}}"}, defaultAllow: true,
		w: &cart, r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "S3", policies: []string{"billing/p: {selector: {service: catalog}}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "S4", policies: []string{"shop/p: {selector: {}}"}, defaultAllow: true,
		w: &cart, r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "S5", policies: []string{"shop/p: {selector: {matchLabels: {tier: backend}}}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "S6", policies: []string{"shop/p: {selector: {matchLabels: {tier: backend}}}"}, defaultAllow: true,
		w: &unlabeled, r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "S7", policies: []string{"shop/p: {selector: {service: catalog, matchLabels: {version: v2}}}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "S8", policies: []string{"trellis-system/p: {selector: {}}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "S9", policies: []string{"trellis-system/p: {selector: {service: catalog}}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},

	// Rules.
	{id: "R1", policies: []string{"shop/p: {rules: [{}]}"},
		r: tcp("", 5432), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "R2", policies: []string{"shop/p: {}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "R3", policies: []string{"shop/p: {action: DENY}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "R4", policies: []string{"shop/p: {action: DENY, rules: [{}]}", allowAll},
		r: get(frontend, "/"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "R5", policies: []string{"shop/p: {rules: [{from: [{principals: ['" + frontend + "']}], to: [{methods: [GET]}]}]}"},
		r: call(frontend, "POST", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "R6", policies: []string{"shop/p: {rules: [{to: [{methods: [GET, POST]}]}]}"},
		r: call(frontend, "POST", "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "R7", policies: []string{"shop/p: {rules: [{to: [{methods: [GET]}]}, {to: [{methods: [POST]}]}]}"},
		r: call(frontend, "POST", "/"), allow: true, cause: CauseAllow, policy: "shop/p", rule: 1},
	{id: "R8", policies: []string{"shop/p: {rules: [{from: [{namespaces: [billing]}, {namespaces: [shop]}]}]}"},
		r: get(frontend, "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "R9", policies: []string{"shop/p: {rules: [{from: [{namespaces: [shop], notPrincipals: ['" + frontend + "']}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "R10", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-tenant]', values: [a]}, {key: 'request.headers[x-env]', values: [prod]}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-tenant", "a"), allow: false, cause: CauseNoAllowMatch},
	{id: "R11", policies: []string{"shop/p: {rules: [{to: [{methods: [GET]}, {paths: [/health]}]}]}"},
		r: call(frontend, "POST", "/health"), allow: true, cause: CauseAllow, policy: "shop/p"},

	// Patterns.
	{id: "G1", policies: []string{"shop/p: {rules: [{from: [{principals: ['" + frontend + "']}]}]}"},
		r: get(frontend+"-v2", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "G2", policies: []string{"shop/p: {rules: [{from: [{principals: ['spiffe://trellis.local/ns/shop/*']}]}]}"},
		r: get("spiffe://trellis.local/ns/shopping/sa/x", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "G3", policies: []string{"shop/p: {rules: [{from: [{principals: ['*/sa/frontend']}]}]}"},
		r: get("spiffe://trellis.local/ns/web/sa/frontend", "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "G4", policies: []string{"shop/p: {rules: [{from: [{principals: ['*']}]}]}"},
		r: get(evil, "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "G5", policies: []string{"shop/p: {rules: [{to: [{paths: ['/items/*']}]}]}"},
		r: get(frontend, "/items"), allow: false, cause: CauseNoAllowMatch},
	{id: "G6", policies: []string{"shop/p: {rules: [{to: [{paths: [/items, '/items/*']}]}]}"},
		r: get(frontend, "/items/42"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "G7", policies: []string{"shop/p: {rules: [{to: [{paths: ['*.json']}]}]}"},
		r: get(frontend, "/a/b.json"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "G8", policies: []string{"shop/p: {action: DENY, rules: [{to: [{paths: [/admin]}]}]}", allowAll},
		r: get(frontend, "/admin?debug=1"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "G9", policies: []string{"shop/p: {rules: [{to: [{hosts: [catalog.shop]}]}]}"},
		r: withHost(get(frontend, "/"), "Catalog.Shop"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "G10", policies: []string{"shop/p: {rules: [{to: [{hosts: [catalog.shop]}]}]}"},
		r: withHost(get(frontend, "/"), "catalog.shop:8080"), allow: false, cause: CauseNoAllowMatch},
	{id: "G11", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-tenant]', values: ['*']}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-tenant", "a"), allow: false, cause: CauseNoAllowMatch},

	// Not-lists.
	{id: "N1", policies: []string{"shop/p: {rules: [{from: [{notPrincipals: ['" + frontend + "']}]}]}"},
		r: get(backend, "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "N2", policies: []string{"shop/p: {rules: [{from: [{notPrincipals: ['" + frontend + "']}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "N3", policies: []string{"shop/p: {rules: [{to: [{notPorts: [9090]}]}]}"},
		r: withPort(get(frontend, "/"), 9090), allow: false, cause: CauseNoAllowMatch},
	{id: "N4", policies: []string{"shop/p: {rules: [{to: [{methods: [GET], notPaths: ['/admin*']}]}]}"},
		r: get(frontend, "/admin/users"), allow: false, cause: CauseNoAllowMatch},
	{id: "N5", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-env]', notValues: [test]}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-env", "prod"), allow: true, cause: CauseAllow, policy: "shop/p"},

	// Plaintext callers and missing identity attributes.
	{id: "P1", policies: []string{"shop/p: {rules: [{to: [{methods: [GET]}]}]}"},
		r: get("", "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "P2", policies: []string{"shop/p: {rules: [{from: [{principals: ['*']}]}]}"},
		r: get("", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P3", policies: []string{"shop/p: {rules: [{from: [{notPrincipals: ['" + evil + "']}]}]}"},
		r: get("", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P4", policies: []string{"shop/p: {rules: [{from: [{namespaces: [shop]}]}]}"},
		r: get("", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P5", policies: []string{"shop/p: {rules: [{from: [{notNamespaces: [evil]}]}]}"},
		r: get("", "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P6", policies: []string{"shop/p: {action: DENY, rules: [{from: [{principals: ['" + evil + "']}]}]}", allowAll},
		r: get("", "/"), allow: true, cause: CauseAllow, policy: "shop/allow-all"},
	{id: "P7", policies: []string{"shop/p: {action: DENY, rules: [{from: [{notPrincipals: ['*']}]}]}", allowAll},
		r: get("", "/"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "P8", policies: []string{"shop/p: {action: DENY, rules: [{from: [{notNamespaces: [shop]}]}]}", allowAll},
		r: get("", "/"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "P9", policies: []string{"shop/p: {action: DENY, rules: [{from: [{notPrincipals: ['*']}]}]}", allowAll},
		r: get(frontend, "/"), allow: true, cause: CauseAllow, policy: "shop/allow-all"},
	{id: "P10", policies: []string{"shop/p: {rules: [{from: [{namespaces: [shop]}]}]}"},
		r: get(partner, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P11", policies: []string{"shop/p: {rules: [{from: [{principals: ['" + partner + "']}]}]}"},
		r: get(partner, "/"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "P12", policies: []string{"shop/p: {rules: [{from: [{services: [frontend]}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "P13", policies: []string{"shop/p: {rules: [{from: [{services: [frontend]}]}]}"},
		r: withService(get(frontend, "/"), "frontend"), allow: true, cause: CauseAllow, policy: "shop/p"},

	// TCP connections.
	{id: "T1", policies: []string{"shop/p: {rules: [{to: [{ports: [5432]}]}]}"},
		r: tcp(frontend, 5432), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "T2", policies: []string{"shop/p: {rules: [{to: [{methods: [GET]}]}]}"},
		r: tcp(frontend, 5432), allow: false, cause: CauseNoAllowMatch},
	{id: "T3", policies: []string{"shop/p: {rules: [{to: [{notPaths: [/admin]}]}]}"},
		r: tcp(frontend, 5432), allow: false, cause: CauseNoAllowMatch},
	{id: "T4", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-env]', notValues: [test]}]}]}"},
		r: tcp(frontend, 5432), allow: false, cause: CauseNoAllowMatch},
	{id: "T5", policies: []string{"shop/p: {rules: [{to: [{methods: [GET]}, {ports: [5432]}]}]}"},
		r: tcp(frontend, 5432), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "T6", policies: []string{"shop/p: {rules: [{to: [{ports: [5432], methods: [GET]}]}]}"},
		r: tcp(frontend, 5432), allow: false, cause: CauseNoAllowMatch},
	{id: "T7", policies: []string{"shop/p: {action: DENY, rules: [{to: [{paths: [/admin]}]}]}", allowAll},
		r: tcp(frontend, 5432), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "T8", policies: []string{"shop/p: {action: DENY, rules: [{to: [{ports: [8080], paths: [/admin]}]}]}", allowAll},
		r: tcp(frontend, 5432), allow: true, cause: CauseAllow, policy: "shop/allow-all"},
	{id: "T9", policies: []string{"shop/p: {action: DENY, rules: [{from: [{namespaces: [evil]}], to: [{methods: [POST]}]}]}", allowAll},
		r: tcp(frontend, 5432), allow: true, cause: CauseAllow, policy: "shop/allow-all"},
	{id: "T10", policies: []string{"shop/p: {action: DENY, rules: [{when: [{key: 'request.headers[x-debug]', values: ['1']}]}]}", allowAll},
		r: tcp(frontend, 5432), allow: false, cause: CauseDeny, policy: "shop/p"},

	// Headers.
	{id: "H1", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-tenant]', values: [a, b]}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-tenant", "b"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "H2", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-tenant]', values: [a, b]}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "H3", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-env]', notValues: [test]}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "H4", policies: []string{"shop/p: {action: DENY, rules: [{when: [{key: 'request.headers[x-env]', notValues: [prod]}]}]}", allowAll},
		r: get(frontend, "/"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "H5", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[X-Tenant]', values: [a]}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-tenant", "a"), allow: true, cause: CauseAllow, policy: "shop/p"},
	{id: "H6", policies: []string{"shop/p: {rules: [{when: [{key: 'request.headers[x-tenant]', values: [a]}]}]}"},
		r: withHeaders(get(frontend, "/"), "x-tenant", "A"), allow: false, cause: CauseNoAllowMatch},

	// Decision order.
	{id: "D1", policies: []string{"shop/p: {action: DENY, rules: [{to: [{methods: [GET]}]}]}", allowAll},
		r: get(frontend, "/"), allow: false, cause: CauseDeny, policy: "shop/p"},
	{id: "D2", r: get(frontend, "/"), allow: false, cause: CauseMeshDefault},
	{id: "D3", defaultAllow: true, r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
	{id: "D4", policies: []string{"shop/p: {rules: [{to: [{methods: [POST]}]}]}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: false, cause: CauseNoAllowMatch},
	{id: "D5", policies: []string{"shop/b-deny: {action: DENY, rules: [{}]}", "shop/a-deny: {action: DENY, rules: [{to: [{methods: [POST]}]}, {}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseDeny, policy: "shop/a-deny", rule: 1},
	{id: "D6", policies: []string{"trellis-system/z: {action: DENY, rules: [{from: [{namespaces: [evil]}]}]}", allowAll},
		r: get(evil, "/"), allow: false, cause: CauseDeny, policy: "trellis-system/z"},
	{id: "D7", policies: []string{"shop/a: {rules: [{to: [{methods: [POST]}]}]}", "shop/b: {rules: [{to: [{methods: [GET]}]}]}"},
		r: get(frontend, "/"), allow: true, cause: CauseAllow, policy: "shop/b"},

	// Audit mode.
	{id: "A1", policies: []string{"shop/p: {action: DENY, enforcement: audit, rules: [{}]}", allowAll},
		r: get(frontend, "/"), allow: true, cause: CauseAllow, policy: "shop/allow-all",
		audits: []AuditResult{{Policy: "shop/p", Deny: true, Matched: true, Rule: 0, WouldAllow: false}}},
	{id: "A2", policies: []string{"shop/p: {enforcement: audit, rules: [{to: [{methods: [GET]}]}]}"}, defaultAllow: true,
		r: call(frontend, "POST", "/"), allow: true, cause: CauseMeshDefault,
		audits: []AuditResult{{Policy: "shop/p", Rule: -1, WouldAllow: false}}},
	{id: "A3", policies: []string{"shop/p: {enforcement: audit, rules: [{to: [{methods: [GET]}]}]}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault,
		audits: []AuditResult{{Policy: "shop/p", Matched: true, Rule: 0, WouldAllow: true}}},
	{id: "A4", policies: []string{"shop/p: {enforcement: audit}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault,
		audits: []AuditResult{{Policy: "shop/p", Rule: -1, WouldAllow: false}}},
	{id: "A5", policies: []string{"shop/d: {action: DENY, rules: [{}]}", "shop/p: {enforcement: audit, rules: [{}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseDeny, policy: "shop/d",
		audits: []AuditResult{{Policy: "shop/p", Matched: true, Rule: 0, WouldAllow: false}}},
	{id: "A6", policies: []string{"shop/loose: {rules: [{to: [{methods: [GET]}]}]}", "shop/tight: {enforcement: audit, rules: [{to: [{methods: [GET], paths: ['/items*']}]}]}"},
		r: get(frontend, "/admin"), allow: true, cause: CauseAllow, policy: "shop/loose",
		audits: []AuditResult{{Policy: "shop/tight", Rule: -1, WouldAllow: true}}},
	{id: "A7", policies: []string{"shop/p: {action: DENY, enforcement: audit, rules: [{to: [{methods: [POST]}]}]}"},
		r: get(frontend, "/"), allow: false, cause: CauseMeshDefault,
		audits: []AuditResult{{Policy: "shop/p", Deny: true, Rule: -1, WouldAllow: false}}},
	{id: "A8", policies: []string{"shop/p: {selector: {service: cart}, action: DENY, enforcement: audit, rules: [{}]}"}, defaultAllow: true,
		r: get(frontend, "/"), allow: true, cause: CauseMeshDefault},
}

func TestSemantics(t *testing.T) {
	for _, tc := range semanticsCases {
		t.Run(tc.id, func(t *testing.T) {
			objs := mustPolicies(t, tc.policies...)
			opts := Options{DefaultAllow: tc.defaultAllow, TrustDomain: "trellis.local"}
			e, err := Compile(objs, opts)
			if err != nil {
				t.Fatal(err)
			}
			w := catalog
			if tc.w != nil {
				w = *tc.w
			}
			var audits []AuditResult
			got := e.DecideAudit(&w, &tc.r, func(a AuditResult) {
				a.Reason = ""
				audits = append(audits, a)
			})
			wantRule := -1
			if tc.policy != "" {
				wantRule = tc.rule
			}
			if got.Allow != tc.allow || got.Cause != tc.cause || got.Policy != tc.policy || got.Rule != wantRule {
				t.Errorf("got allow=%v cause=%v policy=%q rule=%d, want allow=%v cause=%v policy=%q rule=%d",
					got.Allow, got.Cause, got.Policy, got.Rule, tc.allow, tc.cause, tc.policy, wantRule)
			}
			if !slices.Equal(audits, tc.audits) {
				t.Errorf("audits:\ngot  %+v\nwant %+v", audits, tc.audits)
			}

			// The reference evaluator must agree with every row too.
			var refs []refPolicy
			for i := range objs {
				spec, err := resource.AuthorizationPolicySpecOf(&objs[i])
				if err != nil {
					t.Fatal(err)
				}
				refs = append(refs, refPolicy{namespace: objs[i].Metadata.Namespace, name: objs[i].Metadata.Name, spec: spec})
			}
			ref := refDecide(refs, opts, w, tc.r)
			if ref.allow != tc.allow || ref.policy != tc.policy || ref.rule != wantRule || !slices.Equal(ref.audits, tc.audits) {
				t.Errorf("reference: allow=%v policy=%q rule=%d audits=%+v", ref.allow, ref.policy, ref.rule, ref.audits)
			}
		})
	}
}

// TestSemanticsTableIsTested checks that docs/policy.md and semanticsCases
// list the same rows.
func TestSemanticsTableIsTested(t *testing.T) {
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	var inDoc []string
	for _, m := range regexp.MustCompile(`(?m)^\| ([A-Z][0-9]+) \|`).FindAllStringSubmatch(string(doc), -1) {
		inDoc = append(inDoc, m[1])
	}
	var inTest []string
	for _, tc := range semanticsCases {
		inTest = append(inTest, tc.id)
	}
	for _, id := range inDoc {
		if !slices.Contains(inTest, id) {
			t.Errorf("docs/policy.md row %s has no case in semanticsCases", id)
		}
	}
	for _, id := range inTest {
		if !slices.Contains(inDoc, id) {
			t.Errorf("semanticsCases has %s, which docs/policy.md does not list", id)
		}
	}
	if len(inDoc) != len(slices.Compact(slices.Sorted(slices.Values(inDoc)))) {
		t.Errorf("docs/policy.md lists a row id twice: %v", inDoc)
	}
}
