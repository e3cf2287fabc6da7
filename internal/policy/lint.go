package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Kinds of lint findings.
const (
	// LintInvalid: the policy does not compile (OtherPolicy is empty).
	LintInvalid = "invalid"
	// LintShadowed: an ALLOW rule is covered by a rule (OtherPolicy,
	// OtherRule) of an ALLOW policy that selects at least the same
	// workloads: removing it changes no decision.
	LintShadowed = "shadowed"
	// LintDeadDeny: a DENY rule is covered by a rule of a DENY policy that
	// selects at least the same workloads: it never changes a decision.
	LintDeadDeny = "dead-deny"
	// LintAllowDenied: an ALLOW rule is covered by a DENY rule that
	// selects at least the same workloads: it can never let a request in.
	LintAllowDenied = "allow-denied"
	// LintNoWorkload: the selector matches none of the known workloads.
	LintNoWorkload = "no-workload"
	// LintForeignPrincipal: a principal pattern cannot match a SPIFFE ID
	// of the mesh's trust domain.
	LintForeignPrincipal = "foreign-principal"
	// LintStaleAudit: the policy has been in audit mode for more than
	// StaleAuditAge.
	LintStaleAudit = "stale-audit"
)

// StaleAuditAge is how long a policy may stay in audit mode before Lint
// reports it: audit is a rollout step, not a place to leave policies.
const StaleAuditAge = 7 * 24 * time.Hour

// Finding is one problem Lint found. Rule and OtherRule are indexes into
// spec.rules, or -1 when the finding is about a whole policy. OtherPolicy
// and OtherRule name the broader rule of a coverage finding.
type Finding struct {
	Kind        string
	Message     string
	Policy      string // namespace/name
	Rule        int
	OtherPolicy string
	OtherRule   int
}

func (f Finding) String() string {
	at := f.Policy
	if f.Rule >= 0 {
		at += fmt.Sprintf(" rule %d", f.Rule)
	}
	return fmt.Sprintf("%s: %s: %s", at, f.Kind, f.Message)
}

// Lint checks policies for rules that cannot do what their author meant.
// Objects of other kinds are skipped. known lists the mesh's workloads for
// the no-workload check, which is skipped when known is nil; trustDomain
// enables the foreign-principal check; now dates the stale-audit check, from
// the later of metadata.creationTimestamp and metadata.updateTimestamp.
//
// Coverage ("rule A covers rule B": every request B matches, A matches) is
// decided syntactically and conservatively: A covers B only when each
// condition of A is provably implied by a condition of B, so Lint may miss a
// shadowed rule but never reports one that is not. Findings are ordered by
// policy (namespace, name), then rule.
func Lint(policies []resource.Object, known []Workload, now time.Time, trustDomain string) []Finding {
	var (
		out   []Finding
		all   []*compiled
		seen  = map[string]bool{}
		since = map[*compiled]*time.Time{} // last created or updated
	)
	for i := range policies {
		o := &policies[i]
		if o.Kind != resource.KindAuthorizationPolicy {
			continue
		}
		p, err := compilePolicy(o)
		if err != nil {
			out = append(out, Finding{Kind: LintInvalid, Message: err.Error(), Policy: refOf(o), Rule: -1, OtherRule: -1})
			continue
		}
		if seen[p.ref] {
			out = append(out, Finding{Kind: LintInvalid, Message: "defined twice; the other definition is linted", Policy: p.ref, Rule: -1, OtherRule: -1})
			continue
		}
		seen[p.ref] = true
		if t := o.Metadata.UpdateTimestamp; t != nil {
			since[p] = t
		}
		if t := o.Metadata.CreationTimestamp; t != nil && (since[p] == nil || t.After(*since[p])) {
			since[p] = t
		}
		all = append(all, p)
	}
	slices.SortFunc(all, func(a, b *compiled) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	byNS := map[string][]*compiled{}
	var mesh []*compiled
	for _, p := range all {
		if p.meshWide {
			mesh = append(mesh, p)
		} else {
			byNS[p.namespace] = append(byNS[p.namespace], p)
		}
	}
	for _, p := range all {
		out = append(out, lintPolicy(p, since[p], known, now, trustDomain)...)
		// Broader policies can only be mesh-wide or in p's namespace.
		others := slices.Concat(mesh, byNS[p.namespace])
		if p.custom {
			continue // its provider decides: coverage says nothing
		}
		for i := range p.rules {
			out = append(out, lintCoverage(p, i, others)...)
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		ans, an, _ := strings.Cut(a.Policy, "/")
		bns, bn, _ := strings.Cut(b.Policy, "/")
		return cmp.Or(cmp.Compare(ans, bns), cmp.Compare(an, bn), cmp.Compare(a.Rule, b.Rule))
	})
	return out
}

func refOf(o *resource.Object) string {
	ns := o.Metadata.Namespace
	if ns == "" {
		ns = resource.DefaultNamespace
	}
	return ns + "/" + o.Metadata.Name
}

func lintPolicy(p *compiled, since *time.Time, known []Workload, now time.Time, trustDomain string) []Finding {
	var out []Finding
	if known != nil && !slices.ContainsFunc(known, func(w Workload) bool { return Selects(p.namespace, p.spec.Selector, &w) }) {
		out = append(out, Finding{Kind: LintNoWorkload, Policy: p.ref, Rule: -1, OtherRule: -1,
			Message: fmt.Sprintf("selector %s matches no known workload; check the namespace, service name and labels", describeSelector(p))})
	}
	if p.audit {
		if since != nil && now.Sub(*since) > StaleAuditAge {
			out = append(out, Finding{Kind: LintStaleAudit, Policy: p.ref, Rule: -1, OtherRule: -1,
				Message: fmt.Sprintf("in audit mode since %s (%d days): enforce it (spec.enforcement: enforce) or delete it",
					since.UTC().Format(time.DateOnly), int(now.Sub(*since)/(24*time.Hour)))})
		}
	}
	if trustDomain != "" {
		for i, r := range p.spec.Rules {
			for j, src := range r.From {
				for _, field := range []struct {
					name string
					list []string
				}{{"principals", src.Principals}, {"notPrincipals", src.NotPrincipals}} {
					for k, s := range field.list {
						if !mayMatchTrustDomain(parsePattern(s, false), trustDomain) {
							out = append(out, Finding{Kind: LintForeignPrincipal, Policy: p.ref, Rule: i, OtherRule: -1,
								Message: fmt.Sprintf("spec.rules[%d].from[%d].%s[%d]: %q can match no identity of trust domain %q; fix the trust domain unless it names a federated one",
									i, j, field.name, k, s, trustDomain)})
						}
					}
				}
			}
		}
	}
	return out
}

func describeSelector(p *compiled) string {
	var parts []string
	if p.service != "" {
		parts = append(parts, "service: "+p.service)
	}
	if len(p.labels) > 0 {
		var ls []string
		for _, l := range p.labels {
			ls = append(ls, l.key+": "+l.value)
		}
		parts = append(parts, "matchLabels: {"+strings.Join(ls, ", ")+"}")
	}
	where := "in namespace " + p.namespace
	if p.meshWide {
		where = "(mesh-wide)"
	}
	return "{" + strings.Join(parts, ", ") + "} " + where
}

// mayMatchTrustDomain reports whether a principal pattern can match an ID
// spiffe://td/...
func mayMatchTrustDomain(p pattern, td string) bool {
	root := "spiffe://" + td + "/"
	switch p.kind {
	case patExact:
		return strings.HasPrefix(p.lit, root)
	case patPrefix:
		return strings.HasPrefix(p.lit, root) || strings.HasPrefix(root, p.lit)
	}
	return true
}

// lintCoverage reports rule i of p when a rule of one of others (p's own
// included) covers it: at most one finding of each kind.
func lintCoverage(p *compiled, i int, others []*compiled) []Finding {
	var out []Finding
	small := &p.rules[i]
	found := map[string]bool{}
	for _, q := range others {
		if q.custom || !scopeCovers(q, p) || q.audit && !p.audit {
			// q does not select all p selects, or is in audit
			// while p is enforced, so q decides nothing p does.
			continue
		}
		for j := range q.rules {
			if q == p && j == i {
				continue
			}
			big := &q.rules[j]
			var kind string
			switch {
			case p.deny && q.deny:
				kind = LintDeadDeny
			case !p.deny && !q.deny:
				kind = LintShadowed
			case !p.deny && q.deny:
				kind = LintAllowDenied
			default:
				continue // an ALLOW never makes a DENY rule dead
			}
			if found[kind] || !ruleCovers(big, small) {
				continue
			}
			if kind != LintAllowDenied && ruleCovers(small, big) && scopeCovers(p, q) && (!p.audit || q.audit) &&
				before(p, i, q, j) {
				// Equivalent rules: report only the later one.
				continue
			}
			found[kind] = true
			out = append(out, Finding{Kind: kind, Policy: p.ref, Rule: i, OtherPolicy: q.ref, OtherRule: j,
				Message: coverageMessage(kind, p, i, q, j)})
		}
	}
	return out
}

func before(p *compiled, i int, q *compiled, j int) bool {
	if p == q {
		return i < j
	}
	return cmp.Or(cmp.Compare(p.namespace, q.namespace), cmp.Compare(p.name, q.name)) < 0
}

func coverageMessage(kind string, p *compiled, i int, q *compiled, j int) string {
	other := fmt.Sprintf("rule %d of %s", j, q.ref)
	if p == q {
		other = fmt.Sprintf("rule %d of the same policy", j)
	}
	switch kind {
	case LintShadowed:
		return fmt.Sprintf("shadowed by %s, which allows every request this rule allows: remove this rule or narrow the other", other)
	case LintDeadDeny:
		return fmt.Sprintf("dead: %s already denies every request this rule denies: remove this rule or narrow the other", other)
	}
	return fmt.Sprintf("never takes effect: DENY %s denies every request this rule allows: remove this rule or narrow the DENY", other)
}

// scopeCovers reports whether big selects every workload small selects.
func scopeCovers(big, small *compiled) bool {
	switch {
	case big.meshWide:
		return true
	case small.meshWide, big.namespace != small.namespace,
		big.service != "" && big.service != small.service:
		return false
	}
	for _, l := range big.labels {
		if !slices.Contains(small.labels, l) {
			return false
		}
	}
	return true
}

// ruleCovers reports whether every request small matches, big matches.
// Conservative: false when unsure.
func ruleCovers(big, small *rule) bool {
	db, ds := big.deny, small.deny
	if len(big.from) > 0 {
		from := small.from
		if len(from) == 0 {
			from = []source{{}}
		}
		for k := range from {
			s := &from[k]
			if !slices.ContainsFunc(big.from, func(b source) bool {
				return condCovers(&b.principal, &s.principal, db, ds, false) &&
					condCovers(&b.namespace, &s.namespace, db, ds, false) &&
					condCovers(&b.service, &s.service, db, ds, false)
			}) {
				return false
			}
		}
	}
	if len(big.to) > 0 {
		to := small.to
		if len(to) == 0 {
			to = []operation{{}}
		}
		for k := range to {
			o := &to[k]
			if !slices.ContainsFunc(big.to, func(b operation) bool {
				return portCovers(&b.ports, &o.ports, db, ds) &&
					condCovers(&b.method, &o.method, db, ds, true) &&
					// A case-insensitive path list and a case-sensitive one
					// match different sets: no cover across them.
					(b.path.none() || b.path.pos.fold == o.path.pos.fold) &&
					condCovers(&b.path, &o.path, db, ds, true) &&
					condCovers(&b.host, &o.host, db, ds, true)
			}) {
				return false
			}
		}
	}
	// Conditions are ANDed: each of big's must follow from one of
	// small's on the same header.
	for k := range big.when {
		b := &big.when[k]
		if !slices.ContainsFunc(small.when, func(s condition) bool {
			return s.header == b.header && condCovers(&b.cond, &s.cond, db, ds, true)
		}) {
			return false
		}
	}
	return true
}

// condCovers reports whether c (in a rule of a DENY policy if ds) holds for
// every attribute value, missing or hidden (HTTP attributes on TCP, when
// canHide) for which small holds, in a rule of a DENY policy if db.
func condCovers(big, small *cond, db, ds, canHide bool) bool {
	if big.none() {
		return true
	}
	missing := func(c *cond, deny bool) bool { return len(c.pos.all) == 0 && (len(c.neg.all) == 0 || deny) }
	if missing(small, ds) && !missing(big, db) {
		return false
	}
	if canHide && (small.none() || ds) && !db {
		return false
	}
	// Values: small's set (pos minus neg) must be within big's.
	excluded := func(p pattern) bool {
		return slices.ContainsFunc(small.neg.all, func(n pattern) bool { return patCovers(n, p) })
	}
	if len(big.pos.all) > 0 && !slices.ContainsFunc(big.pos.all, func(p pattern) bool { return p.kind == patAny }) {
		if len(small.pos.all) == 0 {
			return false
		}
		for _, p := range small.pos.all {
			if !excluded(p) && !slices.ContainsFunc(big.pos.all, func(b pattern) bool { return patCovers(b, p) }) {
				return false
			}
		}
	}
	for _, n := range big.neg.all {
		if excluded(n) {
			continue
		}
		if len(small.pos.all) == 0 {
			return false
		}
		for _, p := range small.pos.all {
			if !excluded(p) && !disjoint(p, n) {
				return false
			}
		}
	}
	return true
}

func portCovers(big, small *portCond, db, ds bool) bool {
	if big.none() {
		return true
	}
	missing := func(c *portCond, deny bool) bool { return len(c.pos) == 0 && (len(c.neg) == 0 || deny) }
	if missing(small, ds) && !missing(big, db) {
		return false
	}
	// small's ports: pos (or every port) minus neg.
	if len(big.pos) > 0 {
		if len(small.pos) == 0 {
			return false
		}
		for _, p := range small.pos {
			if !slices.Contains(small.neg, p) && !slices.Contains(big.pos, p) {
				return false
			}
		}
	}
	for _, n := range big.neg {
		if slices.Contains(small.neg, n) {
			continue
		}
		if len(small.pos) == 0 || slices.Contains(small.pos, n) {
			return false
		}
	}
	return true
}

// patCovers reports whether every value small matches, big matches.
func patCovers(big, small pattern) bool {
	switch big.kind {
	case patAny:
		return true
	case patExact:
		return small.kind == patExact && small.lit == big.lit
	case patPrefix:
		return (small.kind == patExact || small.kind == patPrefix) && strings.HasPrefix(small.lit, big.lit)
	case patSuffix:
		return (small.kind == patExact || small.kind == patSuffix) && strings.HasSuffix(small.lit, big.lit)
	}
	return false
}

// disjoint reports whether no value matches both a and b. Conservative.
func disjoint(a, b pattern) bool {
	switch {
	case a.kind == patAny || b.kind == patAny:
		return false
	case a.kind == patExact:
		return !b.match(a.lit, false)
	case b.kind == patExact:
		return !a.match(b.lit, false)
	case a.kind == b.kind && a.kind == patPrefix:
		return !strings.HasPrefix(a.lit, b.lit) && !strings.HasPrefix(b.lit, a.lit)
	case a.kind == b.kind && a.kind == patSuffix:
		return !strings.HasSuffix(a.lit, b.lit) && !strings.HasSuffix(b.lit, a.lit)
	}
	return false
}
