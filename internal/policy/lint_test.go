package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/trellismesh/trellis/internal/resource"
)

var lintNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// short is a Finding without its message: kind policy#rule [other#rule].
func short(f Finding) string {
	s := fmt.Sprintf("%s %s#%d", f.Kind, f.Policy, f.Rule)
	if f.OtherPolicy != "" {
		s += fmt.Sprintf(" %s#%d", f.OtherPolicy, f.OtherRule)
	}
	return s
}

func TestLintCoverage(t *testing.T) {
	fe := "'" + frontend + "'"
	for _, tc := range []struct {
		name     string
		policies []string
		want     []string
	}{
		{"identical rules in one policy: the later is shadowed",
			[]string{"shop/a: {rules: [{to: [{methods: [GET]}]}, {to: [{methods: [GET]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"identical rules in two policies: the later policy's",
			[]string{"shop/b: {rules: [{to: [{methods: [GET]}]}]}", "shop/a: {rules: [{to: [{methods: [GET]}]}]}"},
			[]string{"shadowed shop/b#0 shop/a#0"}},
		{"narrower paths are shadowed by a prefix",
			[]string{"shop/a: {rules: [{to: [{paths: ['/items/*']}]}, {to: [{paths: [/items/1, '/items/2*']}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"a wider rule is not shadowed by a narrower one",
			[]string{"shop/a: {rules: [{to: [{paths: [/items/1]}]}, {to: [{paths: ['/items/*']}]}]}"},
			[]string{"shadowed shop/a#0 shop/a#1"}},
		{"the empty rule shadows everything",
			[]string{"shop/a: {rules: [{}, {from: [{principals: [" + fe + "]}], to: [{methods: [GET]}], when: [{key: 'request.headers[x]', values: ['1']}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"more conditions are narrower (AND)",
			[]string{"shop/a: {rules: [{to: [{methods: [GET]}]}, {to: [{methods: [GET], paths: [/x]}], from: [{namespaces: [shop]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"fewer alternatives are narrower (OR)",
			[]string{"shop/a: {rules: [{from: [{namespaces: [a]}, {namespaces: [b]}]}, {from: [{namespaces: [b]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"a not-list is covered by a longer not-list",
			[]string{"shop/a: {rules: [{to: [{notPorts: [22]}]}, {to: [{notPorts: [22, 23]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"an exact list disjoint from a not-list is covered",
			[]string{"shop/a: {rules: [{from: [{notNamespaces: [evil]}]}, {from: [{namespaces: [shop]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"ALLOW: an identity-free rule is not covered by a not-list (plaintext callers)",
			[]string{"shop/a: {rules: [{from: [{notNamespaces: [evil]}]}, {to: [{methods: [GET]}]}]}"},
			nil},
		{"ALLOW: an HTTP rule does not cover a ports-only rule (TCP)",
			[]string{"shop/a: {rules: [{to: [{notMethods: [DELETE]}]}, {to: [{ports: [8080]}]}]}"},
			nil},
		{"hosts compare case-insensitively",
			[]string{"shop/a: {rules: [{to: [{hosts: ['*.Shop']}]}, {to: [{hosts: [catalog.shop]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},
		{"header values are exact: '*' covers only '*'",
			[]string{"shop/a: {rules: [{when: [{key: 'request.headers[x]', values: ['*']}]}, {when: [{key: 'request.headers[x]', values: [a]}]}]}"},
			nil},
		{"header conditions on different headers do not cover",
			[]string{"shop/a: {rules: [{when: [{key: 'request.headers[x]', values: [a]}]}, {when: [{key: 'request.headers[y]', values: [a]}]}]}"},
			nil},
		{"header names compare case-insensitively",
			[]string{"shop/a: {rules: [{when: [{key: 'request.headers[X-Tenant]', values: [a, b]}]}, {when: [{key: 'request.headers[x-tenant]', values: [a]}, {key: 'request.headers[y]', values: [c]}]}]}"},
			[]string{"shadowed shop/a#1 shop/a#0"}},

		// Scope.
		{"a namespace-wide ALLOW shadows a service's",
			[]string{"shop/svc: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}", "shop/wide: {rules: [{}]}"},
			[]string{"shadowed shop/svc#0 shop/wide#0"}},
		{"a service ALLOW does not shadow a namespace-wide one",
			[]string{"shop/svc: {selector: {service: catalog}, rules: [{}]}", "shop/wide: {rules: [{to: [{methods: [GET]}]}]}"},
			nil},
		{"other namespaces are out of scope",
			[]string{"shop/a: {rules: [{}]}", "billing/b: {rules: [{}]}"},
			nil},
		{"labels: fewer labels are wider",
			[]string{"shop/a: {selector: {matchLabels: {app: x}}, rules: [{}]}", "shop/b: {selector: {matchLabels: {app: x, v: '1'}}, rules: [{}]}"},
			[]string{"shadowed shop/b#0 shop/a#0"}},
		{"mesh-wide DENY kills a namespace DENY",
			[]string{"trellis-system/m: {action: DENY, rules: [{from: [{namespaces: [evil]}]}]}", "shop/d: {action: DENY, rules: [{from: [{namespaces: [evil]}], to: [{methods: [POST]}]}]}"},
			[]string{"dead-deny shop/d#0 trellis-system/m#0"}},
		{"a trellis-system policy with a selector is not mesh-wide",
			[]string{"trellis-system/m: {selector: {service: gw}, action: DENY, rules: [{}]}", "shop/d: {action: DENY, rules: [{}]}"},
			nil},

		// Actions and enforcement.
		{"DENY covers ALLOW",
			[]string{"shop/d: {action: DENY, rules: [{from: [{namespaces: [evil]}]}]}", "shop/a: {rules: [{from: [{namespaces: [evil]}], to: [{methods: [GET]}]}]}"},
			[]string{"allow-denied shop/a#0 shop/d#0"}},
		{"DENY: not-lists hold for plaintext in both rules",
			[]string{"shop/d1: {action: DENY, rules: [{from: [{notNamespaces: [shop]}]}]}", "shop/d2: {action: DENY, rules: [{from: [{notNamespaces: [shop, billing]}]}]}"},
			[]string{"dead-deny shop/d2#0 shop/d1#0"}},
		{"DENY: a not-list does not cover what it excludes",
			[]string{"shop/d: {action: DENY, rules: [{from: [{notNamespaces: [shop]}]}]}", "shop/a: {rules: [{to: [{methods: [GET]}]}]}"},
			nil},
		{"DENY: a not-list covers a narrower not-list in ALLOW",
			[]string{"shop/d: {action: DENY, rules: [{from: [{notPrincipals: ['spiffe://trellis.local/ns/shop/*']}]}]}", "shop/a: {rules: [{from: [{notPrincipals: ['spiffe://trellis.local/*']}]}]}"},
			[]string{"allow-denied shop/a#0 shop/d#0"}},
		{"DENY with a path covers a TCP ALLOW (HTTP conditions hold on TCP in DENY)",
			[]string{"shop/d: {action: DENY, rules: [{to: [{paths: ['/admin*']}]}]}", "shop/a: {rules: [{to: [{paths: [/admin/x]}]}, {to: [{ports: [22]}]}]}"},
			[]string{"allow-denied shop/a#0 shop/d#0"}},
		{"ALLOW never kills a DENY",
			[]string{"shop/d: {action: DENY, rules: [{to: [{methods: [GET]}]}]}", "shop/a: {rules: [{}]}"},
			nil},
		{"an audit-mode policy does not make an enforced rule redundant",
			[]string{"shop/d: {action: DENY, enforcement: audit, rules: [{}]}", "shop/a: {rules: [{}]}"},
			nil},
		{"an enforced policy makes an audit-mode rule redundant",
			[]string{"shop/d: {action: DENY, rules: [{}]}", "shop/a: {enforcement: audit, rules: [{}]}"},
			[]string{"allow-denied shop/a#0 shop/d#0"}},
		{"two audit-mode policies",
			[]string{"shop/audit-1: {enforcement: audit, rules: [{}]}", "shop/audit-2: {enforcement: audit, rules: [{}]}"},
			[]string{"shadowed shop/audit-2#0 shop/audit-1#0"}},
		{"one finding of each kind per rule; of equivalent rules only the later",
			[]string{"shop/a: {rules: [{}]}", "shop/b: {rules: [{}]}", "shop/c: {rules: [{to: [{methods: [GET]}]}]}", "shop/d: {action: DENY, rules: [{}]}", "shop/e: {action: DENY, rules: [{}]}"},
			[]string{"allow-denied shop/a#0 shop/d#0", "shadowed shop/b#0 shop/a#0", "allow-denied shop/b#0 shop/d#0",
				"shadowed shop/c#0 shop/a#0", "allow-denied shop/c#0 shop/d#0", "dead-deny shop/e#0 shop/d#0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range Lint(mustPolicies(t, tc.policies...), nil, lintNow, "") {
				got = append(got, short(f))
				if f.Message == "" {
					t.Errorf("%s: empty message", short(f))
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestLintPolicies(t *testing.T) {
	known := []Workload{
		{Namespace: "shop", Service: "catalog", Labels: map[string]string{"app": "catalog"}},
		{Namespace: "billing", Service: "payments"},
	}
	day := 24 * time.Hour
	at := func(d time.Duration) *time.Time { t := lintNow.Add(-d); return &t }
	for _, tc := range []struct {
		name    string
		policy  string
		created *time.Time
		updated *time.Time
		known   []Workload
		want    []string
		message string // in the first finding
	}{
		{name: "selector matches a known service", policy: "shop/p: {selector: {service: catalog}}", known: known},
		{name: "unknown service", policy: "shop/p: {selector: {service: catalgo}}", known: known,
			want: []string{"no-workload shop/p#-1"}, message: "{service: catalgo} in namespace shop"},
		{name: "unknown labels", policy: "shop/p: {selector: {matchLabels: {app: cart}}}", known: known,
			want: []string{"no-workload shop/p#-1"}},
		{name: "empty namespace", policy: "empty/p: {}", known: known, want: []string{"no-workload empty/p#-1"}},
		{name: "mesh-wide matches everything", policy: "trellis-system/p: {}", known: known},
		{name: "mesh-wide with no workloads known", policy: "trellis-system/p: {}", known: []Workload{},
			want: []string{"no-workload trellis-system/p#-1"}, message: "(mesh-wide)"},
		{name: "no known workloads: skipped", policy: "shop/p: {selector: {service: catalgo}}"},

		{name: "principal in the trust domain", policy: "shop/p: {rules: [{from: [{principals: ['spiffe://trellis.local/ns/a/sa/b', 'spiffe://trellis.local/ns/*', 'spiffe://trellis.lo*', '*/sa/b', '*']}]}]}"},
		{name: "principal of another trust domain", policy: "shop/p: {rules: [{to: [{methods: [GET]}]}, {from: [{principals: ['spiffe://trellis.local/ns/a/sa/b']}, {notPrincipals: ['spiffe://trellis.lcoal/ns/a/sa/b']}]}]}",
			want: []string{"foreign-principal shop/p#1"}, message: `spec.rules[1].from[1].notPrincipals[0]: "spiffe://trellis.lcoal/ns/a/sa/b"`},
		{name: "prefix of another trust domain", policy: "shop/p: {rules: [{from: [{principals: ['spiffe://other.org/*']}]}]}",
			want: []string{"foreign-principal shop/p#0"}},
		{name: "a trust domain that merely starts like ours", policy: "shop/p: {rules: [{from: [{principals: ['spiffe://trellis.local.evil/ns/a/sa/b']}]}]}",
			want: []string{"foreign-principal shop/p#0"}},

		{name: "fresh audit policy", policy: "shop/p: {enforcement: audit}", created: at(6 * day)},
		{name: "stale audit policy", policy: "shop/p: {enforcement: audit}", created: at(8 * day),
			want: []string{"stale-audit shop/p#-1"}, message: "(8 days)"},
		{name: "recently updated audit policy", policy: "shop/p: {enforcement: audit}", created: at(30 * day), updated: at(2 * day)},
		{name: "stale by its update", policy: "shop/p: {enforcement: audit}", created: at(30 * day), updated: at(10 * day),
			want: []string{"stale-audit shop/p#-1"}},
		{name: "old enforced policy", policy: "shop/p: {}", created: at(300 * day)},
		{name: "audit policy without timestamps", policy: "shop/p: {enforcement: audit}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := mustPolicies(t, tc.policy)
			objs[0].Metadata.CreationTimestamp, objs[0].Metadata.UpdateTimestamp = tc.created, tc.updated
			fs := Lint(objs, tc.known, lintNow, "trellis.local")
			var got []string
			for _, f := range fs {
				got = append(got, short(f))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
			if tc.message != "" && !strings.Contains(fs[0].Message, tc.message) {
				t.Errorf("message %q does not contain %q", fs[0].Message, tc.message)
			}
		})
	}
}

func TestLintInvalid(t *testing.T) {
	good := mustPolicies(t, "shop/a: {rules: [{}]}")
	bad := resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindAuthorizationPolicy,
		Metadata: resource.Metadata{Name: "bad", Namespace: "shop"}, Spec: json.RawMessage(`{"action":"MAYBE"}`)}
	mesh := resource.Object{APIVersion: resource.APIVersion, Kind: resource.KindMesh, Metadata: resource.Metadata{Name: "default"}}
	fs := Lint([]resource.Object{good[0], bad, mesh, good[0]}, nil, lintNow, "")
	var got []string
	for _, f := range fs {
		got = append(got, short(f))
	}
	want := []string{"invalid shop/a#-1", "invalid shop/bad#-1"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if !strings.Contains(fs[1].Message, "spec.action") {
		t.Errorf("message %q does not name the field", fs[1].Message)
	}
}

// TestLintIsSound checks that a rule Lint reports as shadowed, dead or
// denied can be removed without changing any decision.
func TestLintIsSound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		objs, refs := genPolicies(t)
		opts := Options{DefaultAllow: rapid.Bool().Draw(t, "defaultAllow"), TrustDomain: genTrustDomain}
		findings := Lint(objs, nil, lintNow, genTrustDomain)
		for _, f := range findings {
			if f.Kind != LintShadowed && f.Kind != LintDeadDeny && f.Kind != LintAllowDenied {
				continue
			}
			without := slices.Clone(refs)
			for i := range without {
				if without[i].namespace+"/"+without[i].name == f.Policy {
					spec := without[i].spec
					spec.Rules = slices.Delete(slices.Clone(spec.Rules), f.Rule, f.Rule+1)
					without[i].spec = spec
				}
			}
			for range 10 {
				w, r := genWorkload(t), genRequest(t)
				before, after := refDecide(refs, opts, w, r), refDecide(without, opts, w, r)
				if before.allow != after.allow {
					t.Fatalf("%s, yet removing the rule changes the decision for %+v %+v from %v to %v",
						f, w, r, before.allow, after.allow)
				}
			}
		}
	})
}

// TestRuleCoversIsSound checks coverage on random pairs of rules directly:
// when ruleCovers says big covers small, no request matches small alone.
func TestRuleCoversIsSound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var rules []rule
		for range 2 {
			spec := genSpec(t)
			for i := range spec.Rules {
				rules = append(rules, compileRule(&spec.Rules[i], spec.Action == resource.ActionDeny))
			}
		}
		td := rapid.SampledFrom([]string{genTrustDomain, ""}).Draw(t, "trustDomain")
		for i := range rules {
			for j := range rules {
				if i == j || !ruleCovers(&rules[i], &rules[j]) {
					continue
				}
				for range 20 {
					r := genRequest(t)
					var a attrs
					a.init(&r, td)
					if rules[j].match(&a) && !rules[i].match(&a) {
						t.Fatalf("rule %d covers rule %d, but only %d matches %+v", i, j, j, r)
					}
				}
			}
		}
	})
}
