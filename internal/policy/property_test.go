package policy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/trellismesh/trellis/internal/resource"
)

// Small alphabets, so that random policies and requests often meet.
var (
	genTrustDomain = "td.local"
	genNamespaces  = []string{"a", "b", "trellis-system"}
	genServices    = []string{"x", "y", "z"}
	genPrincipals  = []string{
		"spiffe://td.local/ns/a/sa/x", "spiffe://td.local/ns/a/sa/y", "spiffe://td.local/ns/b/sa/x",
		"spiffe://other.org/ns/a/sa/x", "spiffe://td.local/ns/a/sa/x/extra",
	}
	genPrincipalPatterns = append(slices.Clone(genPrincipals),
		"spiffe://td.local/ns/a/*", "spiffe://td.local/*", "*/sa/x", "*/ns/b/sa/x", "*")
	genNamespacePatterns = []string{"a", "b", "trellis-system", "*", "tr*", "*b"}
	genServicePatterns   = []string{"x", "y", "*", "x*", "*y"}
	genPorts             = []resource.Port{80, 443, 8080}
	genMethods           = []string{"GET", "POST", "DELETE"}
	genPathPatterns      = []string{"/a", "/a/b", "/b", "/a*", "/a/*", "*b", "*"}
	genHostPatterns      = []string{"h.com", "x.h.com", "*.h.com", "h*", "*", "H.COM"}
	genHeaderKeys        = []string{"request.headers[x-a]", "request.headers[X-B]"}
	genHeaderValues      = []string{"1", "2", "*"}
	genLabelKeys         = []string{"tier", "v"}
	genLabelValues       = []string{"1", "2"}
)

func genSubset[T any](t *rapid.T, label string, from []T, maxLen int) []T {
	return rapid.SliceOfN(rapid.SampledFrom(from), 0, maxLen).Draw(t, label)
}

// genList is usually empty, so that rules have a few conditions, not all.
func genList[T any](t *rapid.T, label string, from []T) []T {
	if rapid.IntRange(0, 3).Draw(t, label+"?") > 0 {
		return nil
	}
	return rapid.SliceOfN(rapid.SampledFrom(from), 1, 2).Draw(t, label)
}

func genSpec(t *rapid.T) resource.AuthorizationPolicySpec {
	var s resource.AuthorizationPolicySpec
	if rapid.Bool().Draw(t, "hasService") {
		s.Selector.Service = rapid.SampledFrom(genServices).Draw(t, "service")
	}
	if rapid.IntRange(0, 3).Draw(t, "hasLabels") == 0 {
		s.Selector.MatchLabels = map[string]string{}
		for _, k := range genSubset(t, "labelKeys", genLabelKeys, 2) {
			s.Selector.MatchLabels[k] = rapid.SampledFrom(genLabelValues).Draw(t, "labelValue")
		}
	}
	s.Action = rapid.SampledFrom([]string{resource.ActionAllow, resource.ActionDeny}).Draw(t, "action")
	s.Enforcement = rapid.SampledFrom([]string{resource.EnforcementEnforce, resource.EnforcementEnforce, resource.EnforcementAudit}).Draw(t, "enforcement")
	nRules := rapid.IntRange(0, 3).Draw(t, "rules")
	for range nRules {
		var r resource.Rule
		for range rapid.IntRange(0, 2).Draw(t, "from") {
			r.From = append(r.From, resource.Source{
				Principals:    genList(t, "principals", genPrincipalPatterns),
				NotPrincipals: genList(t, "notPrincipals", genPrincipalPatterns),
				Namespaces:    genList(t, "namespaces", genNamespacePatterns),
				NotNamespaces: genList(t, "notNamespaces", genNamespacePatterns),
				Services:      genList(t, "services", genServicePatterns),
				NotServices:   genList(t, "notServices", genServicePatterns),
			})
		}
		for range rapid.IntRange(0, 2).Draw(t, "to") {
			r.To = append(r.To, resource.Operation{
				Ports:      genList(t, "ports", genPorts),
				NotPorts:   genList(t, "notPorts", genPorts),
				Methods:    genList(t, "methods", genMethods),
				NotMethods: genList(t, "notMethods", genMethods),
				Paths:      genList(t, "paths", genPathPatterns),
				NotPaths:   genList(t, "notPaths", genPathPatterns),
				Hosts:      genList(t, "hosts", genHostPatterns),
				NotHosts:   genList(t, "notHosts", genHostPatterns),
			})
		}
		for range rapid.IntRange(0, 2).Draw(t, "when") {
			c := resource.Condition{
				Key:       rapid.SampledFrom(genHeaderKeys).Draw(t, "key"),
				Values:    genList(t, "values", genHeaderValues),
				NotValues: genList(t, "notValues", genHeaderValues),
			}
			if len(c.Values) == 0 && len(c.NotValues) == 0 {
				c.Values = []string{rapid.SampledFrom(genHeaderValues).Draw(t, "value")}
			}
			r.When = append(r.When, c)
		}
		s.Rules = append(s.Rules, r)
	}
	return s
}

// genPolicies returns valid objects and the same policies for refDecide.
func genPolicies(t *rapid.T) ([]resource.Object, []refPolicy) {
	n := rapid.IntRange(0, 8).Draw(t, "policies")
	var (
		objs []resource.Object
		refs []refPolicy
	)
	for i := range n {
		ns := rapid.SampledFrom(genNamespaces).Draw(t, "namespace")
		name := fmt.Sprintf("p%d", i)
		spec := genSpec(t)
		raw, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		o := resource.Object{
			APIVersion: resource.APIVersion,
			Kind:       resource.KindAuthorizationPolicy,
			Metadata:   resource.Metadata{Name: name, Namespace: ns},
			Spec:       raw,
		}
		if err := resource.Validate(&o); err != nil {
			t.Fatalf("generated an invalid policy: %v", err)
		}
		got, err := resource.AuthorizationPolicySpecOf(&o)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
		refs = append(refs, refPolicy{namespace: ns, name: name, spec: got})
	}
	return objs, refs
}

func genWorkload(t *rapid.T) Workload {
	w := Workload{
		Namespace: rapid.SampledFrom(append(slices.Clone(genNamespaces), "c")).Draw(t, "wNamespace"),
		Service:   rapid.SampledFrom(append(slices.Clone(genServices), "w")).Draw(t, "wService"),
	}
	if keys := genSubset(t, "wLabels", genLabelKeys, 2); len(keys) > 0 {
		w.Labels = map[string]string{}
		for _, k := range keys {
			w.Labels[k] = rapid.SampledFrom(genLabelValues).Draw(t, "wLabelValue")
		}
	}
	return w
}

func genRequest(t *rapid.T) Request {
	r := Request{
		Principal:     rapid.SampledFrom(append(slices.Clone(genPrincipals), "", "")).Draw(t, "principal"),
		SourceService: rapid.SampledFrom([]string{"", "x", "y"}).Draw(t, "sourceService"),
		HTTP:          rapid.Bool().Draw(t, "http"),
		Port:          rapid.SampledFrom([]int{80, 443, 8080, 0}).Draw(t, "port"),
	}
	if rapid.IntRange(0, 4).Draw(t, "hasSourceNamespace") == 0 {
		r.SourceNamespace = rapid.SampledFrom([]string{"a", "b"}).Draw(t, "sourceNamespace")
	}
	if r.HTTP || rapid.IntRange(0, 4).Draw(t, "tcpWithHTTPFields") == 0 {
		// A TCP request with HTTP fields set checks that they are
		// ignored.
		r.Method = rapid.SampledFrom(append(slices.Clone(genMethods), "")).Draw(t, "method")
		r.Path = rapid.SampledFrom([]string{"/a", "/a/b", "/b", "/a?q=1", "/bb", "/a/", ""}).Draw(t, "path")
		r.Host = rapid.SampledFrom([]string{"h.com", "X.H.com", "y.org", "H.com", ""}).Draw(t, "host")
		if rapid.IntRange(0, 3).Draw(t, "hasHeaders") > 0 {
			h := http.Header{}
			for _, k := range genSubset(t, "headers", []string{"x-a", "x-b"}, 2) {
				h.Set(k, rapid.SampledFrom(genHeaderValues).Draw(t, "headerValue"))
			}
			r.Header = h.Get
		}
	}
	return r
}

func TestEngineAgreesWithReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		objs, refs := genPolicies(t)
		opts := Options{
			DefaultAllow: rapid.Bool().Draw(t, "defaultAllow"),
			TrustDomain:  rapid.SampledFrom([]string{genTrustDomain, ""}).Draw(t, "trustDomain"),
		}
		e, err := Compile(objs, opts)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		for range rapid.IntRange(1, 8).Draw(t, "requests") {
			w, r := genWorkload(t), genRequest(t)
			want := refDecide(refs, opts, w, r)
			var audits []AuditResult
			got := e.DecideAudit(&w, &r, func(a AuditResult) { audits = append(audits, a) })
			if got.Allow != want.allow || got.Policy != want.policy || got.Rule != want.rule {
				t.Fatalf("workload %+v request %+v:\ngot  allow=%v policy=%q rule=%d (%s)\nwant allow=%v policy=%q rule=%d",
					w, r, got.Allow, got.Policy, got.Rule, got.Reason, want.allow, want.policy, want.rule)
			}
			for i := range audits {
				audits[i].Reason = ""
			}
			if !slices.Equal(audits, want.audits) {
				t.Fatalf("workload %+v request %+v: audits\ngot  %+v\nwant %+v", w, r, audits, want.audits)
			}
			if plain := e.Decide(&w, &r); plain != got {
				t.Fatalf("Decide = %+v, DecideAudit = %+v", plain, got)
			}
			if sel := e.Selecting(&w); !slices.Equal(sel, refSelecting(refs, w)) {
				t.Fatalf("Selecting(%+v) = %v, want %v", w, sel, refSelecting(refs, w))
			}
		}
	})
}

func refSelecting(refs []refPolicy, w Workload) []string {
	var out []string
	for _, p := range refs {
		if refSelects(p, w) {
			out = append(out, p.namespace+"/"+p.name)
		}
	}
	slices.Sort(out)
	return out
}

// TestSelectsAgreesWithReference checks the exported Selects helper.
func TestSelectsAgreesWithReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		_, refs := genPolicies(t)
		w := genWorkload(t)
		for _, p := range refs {
			if got, want := Selects(p.namespace, p.spec.Selector, &w), refSelects(p, w); got != want {
				t.Fatalf("Selects(%s, %+v, %+v) = %v, want %v", p.namespace, p.spec.Selector, w, got, want)
			}
		}
	})
}
