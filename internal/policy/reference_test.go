package policy

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/internal/resource"
)

// This file is a deliberately simple evaluator, written from docs/policy.md
// and nothing else: it scans every policy for every request, keeps specs as
// resource types and matches with the strings package. The compiled engine
// must agree with it (property_test.go).

type refPolicy struct {
	namespace, name string
	spec            resource.AuthorizationPolicySpec
}

type refDecision struct {
	allow  bool
	policy string // "" when no single policy decided
	rule   int
	audits []AuditResult
}

func refDecide(policies []refPolicy, opts Options, w Workload, r Request) refDecision {
	ps := slices.Clone(policies)
	slices.SortFunc(ps, func(a, b refPolicy) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	var selected []refPolicy
	for _, p := range ps {
		if refSelects(p, w) {
			selected = append(selected, p)
		}
	}
	ref := func(p refPolicy) string { return p.namespace + "/" + p.name }
	isDeny := func(p refPolicy) bool { return p.spec.Action == resource.ActionDeny }
	isAudit := func(p refPolicy) bool { return p.spec.Enforcement == resource.EnforcementAudit }

	// decideWith is the decision when the policies for which enforced
	// returns true are enforced.
	decideWith := func(enforced func(refPolicy) bool) refDecision {
		for _, p := range selected {
			if enforced(p) && isDeny(p) {
				if i := refMatchPolicy(p, opts, r); i >= 0 {
					return refDecision{allow: false, policy: ref(p), rule: i}
				}
			}
		}
		anyAllow := false
		for _, p := range selected {
			if enforced(p) && !isDeny(p) {
				anyAllow = true
				if i := refMatchPolicy(p, opts, r); i >= 0 {
					return refDecision{allow: true, policy: ref(p), rule: i}
				}
			}
		}
		if anyAllow {
			return refDecision{allow: false, rule: -1}
		}
		return refDecision{allow: opts.DefaultAllow, rule: -1}
	}

	d := decideWith(func(p refPolicy) bool { return !isAudit(p) })
	for _, a := range selected {
		if !isAudit(a) {
			continue
		}
		would := decideWith(func(p refPolicy) bool { return !isAudit(p) || ref(p) == ref(a) })
		i := refMatchPolicy(a, opts, r)
		d.audits = append(d.audits, AuditResult{Policy: ref(a), Deny: isDeny(a), Matched: i >= 0, Rule: i, WouldAllow: would.allow})
	}
	return d
}

func refSelects(p refPolicy, w Workload) bool {
	sel := p.spec.Selector
	if sel.Service == "" && len(sel.MatchLabels) == 0 && p.namespace == "trellis-system" {
		return true
	}
	if p.namespace != w.Namespace {
		return false
	}
	if sel.Service != "" && sel.Service != w.Service {
		return false
	}
	for k, v := range sel.MatchLabels {
		got, ok := w.Labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

func refMatchPolicy(p refPolicy, opts Options, r Request) int {
	for i, rule := range p.spec.Rules {
		if refMatchRule(rule, p.spec.Action == resource.ActionDeny, opts, r) {
			return i
		}
	}
	return -1
}

// value is one request attribute: its value, or missing (not carried by
// the request) or hidden (an HTTP attribute of a TCP connection).
type value struct {
	v       string
	missing bool
	hidden  bool
}

// refCond is the table of docs/policy.md, "Missing attributes".
func refCond(pos, neg []string, val value, deny bool, fold bool) bool {
	if len(pos) == 0 && len(neg) == 0 {
		return true
	}
	if val.hidden {
		return deny
	}
	if val.missing {
		return len(pos) == 0 && deny
	}
	if len(pos) > 0 && !slices.ContainsFunc(pos, func(p string) bool { return refGlob(p, val.v, fold) }) {
		return false
	}
	return !slices.ContainsFunc(neg, func(p string) bool { return refGlob(p, val.v, fold) })
}

func refGlob(pattern, v string, fold bool) bool {
	if fold {
		pattern, v = strings.ToLower(pattern), strings.ToLower(v)
	}
	switch {
	case pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, strings.TrimPrefix(pattern, "*"))
	}
	return pattern == v
}

func refMatchRule(rule resource.Rule, deny bool, opts Options, r Request) bool {
	principal := value{v: r.Principal, missing: r.Principal == ""}
	ns := r.SourceNamespace
	if ns == "" {
		ns = refNamespace(r.Principal, opts.TrustDomain)
	}
	namespace := value{v: ns, missing: ns == ""}
	service := value{v: r.SourceService, missing: r.SourceService == ""}
	httpValue := func(v string) value {
		if !r.HTTP {
			return value{hidden: true}
		}
		return value{v: v, missing: v == ""}
	}
	path := r.Path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}

	if len(rule.From) > 0 && !slices.ContainsFunc(rule.From, func(s resource.Source) bool {
		return refCond(s.Principals, s.NotPrincipals, principal, deny, false) &&
			refCond(s.Namespaces, s.NotNamespaces, namespace, deny, false) &&
			refCond(s.Services, s.NotServices, service, deny, false)
	}) {
		return false
	}
	if len(rule.To) > 0 && !slices.ContainsFunc(rule.To, func(o resource.Operation) bool {
		port := value{v: strconv.Itoa(r.Port), missing: r.Port <= 0 || r.Port > 65535}
		return refCond(portStrings(o.Ports), portStrings(o.NotPorts), port, deny, false) &&
			refCond(o.Methods, o.NotMethods, httpValue(r.Method), deny, false) &&
			refCond(o.Paths, o.NotPaths, httpValue(path), deny, false) &&
			refCond(o.Hosts, o.NotHosts, httpValue(r.Host), deny, true)
	}) {
		return false
	}
	for _, c := range rule.When {
		name := strings.TrimSuffix(strings.TrimPrefix(c.Key, "request.headers["), "]")
		v := ""
		if r.HTTP && r.Header != nil {
			v = r.Header(name)
		}
		// Header values are exact: '*' is an ordinary character.
		if !refExactCond(c.Values, c.NotValues, httpValue(v), deny) {
			return false
		}
	}
	return true
}

func refExactCond(pos, neg []string, val value, deny bool) bool {
	if len(pos) == 0 && len(neg) == 0 {
		return true
	}
	if val.hidden {
		return deny
	}
	if val.missing {
		return len(pos) == 0 && deny
	}
	if len(pos) > 0 && !slices.Contains(pos, val.v) {
		return false
	}
	return !slices.Contains(neg, val.v)
}

func refNamespace(principal, td string) string {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return ""
	}
	if td != "" && parts[0] != td {
		return ""
	}
	return parts[2]
}

func portStrings(ps []resource.Port) []string {
	var out []string
	for _, p := range ps {
		out = append(out, strconv.Itoa(int(p)))
	}
	return out
}
