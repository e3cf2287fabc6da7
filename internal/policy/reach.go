package policy

import "github.com/trellismesh/trellis/internal/resource"

// Caller is a workload seen as a caller, for the control plane's scoping:
// its SPIFFE ID, namespace and service.
type Caller struct {
	Principal string
	Namespace string
	Service   string
}

// Reach is the caller side of one policy, for deciding which services a
// proxy is sent (internal/controlplane/snapshot): which callers its rules
// may admit, and which services its sources name. It over-approximates the
// engine on purpose: operations, conditions and Not lists are ignored, so a
// caller a rule could admit for some request is never left out.
type Reach struct {
	// anyone: a rule admits every caller (no from, or a source without
	// positive lists).
	anyone  bool
	sources []reachSource
	// named are the services and notServices entries of every source.
	named patterns
}

type reachSource struct {
	principal, namespace, service patterns
}

// CompileReach compiles the caller side of spec.
func CompileReach(spec *resource.AuthorizationPolicySpec) *Reach {
	r := &Reach{}
	var named []string
	for i := range spec.Rules {
		rule := &spec.Rules[i]
		if len(rule.From) == 0 {
			r.anyone = true
		}
		for j := range rule.From {
			s := &rule.From[j]
			named = append(append(named, s.Services...), s.NotServices...)
			if len(s.Principals) == 0 && len(s.Namespaces) == 0 && len(s.Services) == 0 {
				r.anyone = true
				continue
			}
			r.sources = append(r.sources, reachSource{
				principal: compilePatterns(s.Principals, false, true),
				namespace: compilePatterns(s.Namespaces, false, true),
				service:   compilePatterns(s.Services, false, true),
			})
		}
	}
	r.named = compilePatterns(named, false, true)
	return r
}

// Anyone reports whether a rule admits every caller.
func (r *Reach) Anyone() bool { return r.anyone }

// MayAdmit reports whether some rule could admit c.
func (r *Reach) MayAdmit(c Caller) bool {
	if r.anyone {
		return true
	}
	for i := range r.sources {
		if r.sources[i].admits(c) {
			return true
		}
	}
	return false
}

// AdmitsByName reports whether some source with a positive list that is
// not just "*" could admit c: the callers a policy names, as opposed to
// those it lets in with everyone else.
func (r *Reach) AdmitsByName(c Caller) bool {
	for i := range r.sources {
		s := &r.sources[i]
		if s.admits(c) && (s.principal.specific() || s.namespace.specific() || s.service.specific()) {
			return true
		}
	}
	return false
}

// NamesService reports whether a services or notServices entry matches
// the service name: a call from that service is decided by its name, so
// the proxy must know the caller's service.
func (r *Reach) NamesService(name string) bool {
	return len(r.named.all) > 0 && r.named.match(name)
}

// ExactKeys returns, for indexing, exact values of which every caller a
// source may admit has one: the source's principals, else its services,
// else its namespaces. ok is false when some source has only patterns
// (its callers must be checked one by one) or the policy admits anyone.
func (r *Reach) ExactKeys() (principals, services, namespaces []string, ok bool) {
	if r.anyone {
		return nil, nil, nil, false
	}
	for i := range r.sources {
		s := &r.sources[i]
		switch {
		case s.principal.exact():
			principals = s.principal.literals(principals)
		case s.service.exact():
			services = s.service.literals(services)
		case s.namespace.exact():
			namespaces = s.namespace.literals(namespaces)
		default:
			return nil, nil, nil, false
		}
	}
	return principals, services, namespaces, true
}

func (s *reachSource) admits(c Caller) bool {
	return (len(s.principal.all) == 0 || s.principal.match(c.Principal)) &&
		(len(s.namespace.all) == 0 || s.namespace.match(c.Namespace)) &&
		(len(s.service.all) == 0 || s.service.match(c.Service))
}

// exact reports whether ps is non-empty and every entry is exact.
func (ps *patterns) exact() bool {
	for _, p := range ps.all {
		if p.kind != patExact {
			return false
		}
	}
	return len(ps.all) > 0
}

// specific reports whether ps has an entry other than "*".
func (ps *patterns) specific() bool {
	for _, p := range ps.all {
		if p.kind != patAny {
			return true
		}
	}
	return false
}

func (ps *patterns) literals(out []string) []string {
	for _, p := range ps.all {
		out = append(out, p.lit)
	}
	return out
}

// NamedExact returns the services and notServices entries when every one
// is exact (ok false when one is a pattern).
func (r *Reach) NamedExact() (names []string, ok bool) {
	if len(r.named.all) == 0 {
		return nil, true
	}
	if !r.named.exact() {
		return nil, false
	}
	return r.named.literals(nil), true
}
