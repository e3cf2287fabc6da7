package policy

import (
	"net/textproto"
	"strings"

	"github.com/trellismesh/trellis/internal/resource"
)

// patternKind is the shape of one list entry. resource.Validate allows only
// these: an exact value, "*", "prefix*" and "*suffix".
type patternKind uint8

const (
	patExact patternKind = iota
	patAny
	patPrefix
	patSuffix
)

// pattern is one compiled list entry: matching is a string comparison.
type pattern struct {
	kind patternKind
	lit  string // the value without '*'; lower case when folding
}

func parsePattern(s string, fold bool) pattern {
	if fold {
		s = strings.ToLower(s)
	}
	switch {
	case s == "*":
		return pattern{kind: patAny}
	case strings.HasSuffix(s, "*"):
		return pattern{kind: patPrefix, lit: s[:len(s)-1]}
	case strings.HasPrefix(s, "*"):
		return pattern{kind: patSuffix, lit: s[1:]}
	}
	return pattern{kind: patExact, lit: s}
}

// match reports whether v, a value the request carries, matches p.
func (p pattern) match(v string, fold bool) bool {
	switch p.kind {
	case patAny:
		return true
	case patPrefix:
		return len(v) >= len(p.lit) && equal(v[:len(p.lit)], p.lit, fold)
	case patSuffix:
		return len(v) >= len(p.lit) && equal(v[len(v)-len(p.lit):], p.lit, fold)
	}
	return equal(v, p.lit, fold)
}

func equal(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// String gives the pattern back as written (lower-cased when folding).
func (p pattern) String() string {
	switch p.kind {
	case patAny:
		return "*"
	case patPrefix:
		return p.lit + "*"
	case patSuffix:
		return "*" + p.lit
	}
	return p.lit
}

// setThreshold is the number of exact entries from which a list also keeps
// a map: below it a slice scan (mostly length checks) is faster than
// hashing the request's value.
const setThreshold = 16

// patterns is a compiled list such as principals or paths. An empty list is
// no condition.
type patterns struct {
	all  []pattern           // every entry, in order (for Lint)
	scan []pattern           // what match scans: all, or the non-exact entries when set is used
	set  map[string]struct{} // exact entries (lower case when folding), for long lists
	fold bool                // compare case-insensitively (hosts)
}

// compilePatterns compiles list; glob says whether '*' is a wildcard (it
// is an ordinary character in header values).
func compilePatterns(list []string, fold, glob bool) patterns {
	ps := patterns{fold: fold}
	exact := 0
	for _, s := range list {
		p := pattern{kind: patExact, lit: s}
		if glob {
			p = parsePattern(s, fold)
		}
		ps.all = append(ps.all, p)
		if p.kind == patExact {
			exact++
		}
	}
	ps.scan = ps.all
	if exact >= setThreshold {
		ps.set = make(map[string]struct{}, exact)
		ps.scan = nil
		for _, p := range ps.all {
			if p.kind == patExact {
				ps.set[p.lit] = struct{}{}
			} else {
				ps.scan = append(ps.scan, p)
			}
		}
	}
	return ps
}

// match reports whether v matches any entry.
func (ps *patterns) match(v string) bool {
	if ps.set != nil {
		if ps.fold && hasUpper(v) {
			// The set holds lower-case keys; lowering v would allocate.
			for k := range ps.all {
				if ps.all[k].kind == patExact && strings.EqualFold(v, ps.all[k].lit) {
					return true
				}
			}
		} else if _, ok := ps.set[v]; ok {
			return true
		}
	}
	for i := range ps.scan {
		if ps.scan[i].match(v, ps.fold) {
			return true
		}
	}
	return false
}

func hasUpper(s string) bool {
	for i := range len(s) {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// cond is the condition a pair of lists (principals and notPrincipals,
// methods and notMethods, ...) puts on one request attribute.
type cond struct {
	pos, neg patterns
}

func compileCond(pos, neg []string, fold bool) cond {
	return cond{pos: compilePatterns(pos, fold, true), neg: compilePatterns(neg, fold, true)}
}

// compileExactCond compiles a condition whose values are literal.
func compileExactCond(pos, neg []string) cond {
	return cond{pos: compilePatterns(pos, false, false), neg: compilePatterns(neg, false, false)}
}

// none reports whether c puts no condition on its attribute.
func (c *cond) none() bool { return len(c.pos.all) == 0 && len(c.neg.all) == 0 }

// match evaluates c against an attribute the request carries (present) or
// lacks, in a rule of a DENY policy (deny) or an ALLOW policy. A missing
// attribute is in no list: a positive list fails (even "*"), and a not-list
// holds only in a DENY rule, so that a missing attribute never helps a
// request in (see docs/policy.md, "Missing attributes").
func (c *cond) match(v string, present, deny bool) bool {
	if !present {
		if len(c.pos.all) > 0 {
			return false
		}
		return len(c.neg.all) == 0 || deny
	}
	if len(c.pos.all) > 0 && !c.pos.match(v) {
		return false
	}
	return len(c.neg.all) == 0 || !c.neg.match(v)
}

// matchAny evaluates c against a multi-valued attribute (a list claim):
// present when it has values; the positive list holds when any value is
// in it, the not-list when none is.
func (c *cond) matchAny(vs []string, deny bool) bool {
	if len(vs) == 0 {
		return c.match("", false, deny)
	}
	if len(c.pos.all) > 0 {
		hit := false
		for _, v := range vs {
			if c.pos.match(v) {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	for _, v := range vs {
		if len(c.neg.all) > 0 && c.neg.match(v) {
			return false
		}
	}
	return true
}

// portCond is the condition of ports and notPorts. Port 0 is "unknown".
type portCond struct {
	pos, neg []uint16
}

func compilePorts(list []resource.Port) []uint16 {
	out := make([]uint16, 0, len(list))
	for _, p := range list {
		out = append(out, uint16(p))
	}
	return out
}

func (c *portCond) none() bool { return len(c.pos) == 0 && len(c.neg) == 0 }

func (c *portCond) match(port int, deny bool) bool {
	if port <= 0 || port > 65535 {
		if len(c.pos) > 0 {
			return false
		}
		return len(c.neg) == 0 || deny
	}
	if len(c.pos) > 0 && !containsPort(c.pos, port) {
		return false
	}
	return !containsPort(c.neg, port)
}

func containsPort(list []uint16, port int) bool {
	for _, p := range list {
		if int(p) == port {
			return true
		}
	}
	return false
}

// source is a compiled Source: who may call.
type source struct {
	principal, namespace, service, requestPrincipal cond
}

// operation is a compiled Operation: what is called.
type operation struct {
	ports              portCond
	method, path, host cond
	httpOnly           bool // method, path or host has a condition
}

// condition is a compiled when entry.
type condition struct {
	header string // canonical MIME header name, as net/http stores keys
	claim  string // the claim name of a request.auth.claims[NAME] key
	key    string // as written, for Lint
	cond   cond
}

// rule is a compiled Rule; rules of DENY policies evaluate missing
// attributes differently (see cond.match), so a rule knows its action.
type rule struct {
	from []source
	to   []operation
	when []condition
	deny bool
}

func compileRule(r *resource.Rule, deny bool) rule {
	out := rule{deny: deny}
	for i := range r.From {
		s := &r.From[i]
		out.from = append(out.from, source{
			principal:        compileCond(s.Principals, s.NotPrincipals, false),
			namespace:        compileCond(s.Namespaces, s.NotNamespaces, false),
			service:          compileCond(s.Services, s.NotServices, false),
			requestPrincipal: compileCond(s.RequestPrincipals, s.NotRequestPrincipals, false),
		})
	}
	for i := range r.To {
		o := &r.To[i]
		op := operation{
			ports:  portCond{pos: compilePorts(o.Ports), neg: compilePorts(o.NotPorts)},
			method: compileCond(o.Methods, o.NotMethods, false),
			path:   compileCond(o.Paths, o.NotPaths, o.PathsIgnoreCase),
			host:   compileCond(o.Hosts, o.NotHosts, true),
		}
		op.httpOnly = !op.method.none() || !op.path.none() || !op.host.none()
		out.to = append(out.to, op)
	}
	for _, c := range r.When {
		cd := condition{key: c.Key, cond: compileExactCond(c.Values, c.NotValues)}
		if claim, ok := strings.CutPrefix(c.Key, resource.ClaimKeyPrefix); ok {
			cd.claim = strings.TrimSuffix(claim, "]")
		} else {
			cd.header = textproto.CanonicalMIMEHeaderKey(strings.TrimSuffix(strings.TrimPrefix(c.Key, "request.headers["), "]"))
		}
		out.when = append(out.when, cd)
	}
	return out
}

// attrs are a request's attributes, resolved once per decision.
type attrs struct {
	principal string
	namespace string
	service   string
	http      bool
	port      int
	method    string
	path      string
	host      string
	header    func(string) string
	reqPrin   string
	claim     func(string) []string
}

func (a *attrs) init(r *Request, trustDomain string) {
	*a = attrs{
		principal: r.Principal,
		namespace: r.SourceNamespace,
		service:   r.SourceService,
		http:      r.HTTP,
		port:      r.Port,
	}
	if a.namespace == "" {
		a.namespace = namespaceOf(r.Principal, trustDomain)
	}
	if r.HTTP {
		a.method, a.host, a.header = r.Method, r.Host, r.Header
		a.reqPrin, a.claim = r.RequestPrincipal, r.Claim
		a.path = r.Path
		if i := strings.IndexAny(a.path, "?#"); i >= 0 {
			a.path = a.path[:i]
		}
	}
}

// namespaceOf returns NS from spiffe://TD/ns/NS/sa/SA when TD is
// trustDomain (any trust domain when trustDomain is empty), or "".
func namespaceOf(principal, trustDomain string) string {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return ""
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 || trustDomain != "" && rest[:i] != trustDomain {
		return ""
	}
	rest, ok = strings.CutPrefix(rest[i:], "/ns/")
	if !ok {
		return ""
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.IndexByte(ns, '/') >= 0 || strings.IndexByte(sa, '/') >= 0 {
		return ""
	}
	return ns
}

func (r *rule) match(a *attrs) bool {
	if len(r.from) > 0 && !r.matchFrom(a) {
		return false
	}
	if len(r.to) > 0 && !r.matchTo(a) {
		return false
	}
	if len(r.when) > 0 {
		if !a.http {
			// Headers are invisible on a TCP connection.
			return r.deny
		}
		for i := range r.when {
			c := &r.when[i]
			if c.claim != "" {
				var vs []string
				if a.claim != nil {
					vs = a.claim(c.claim)
				}
				if !c.cond.matchAny(vs, r.deny) {
					return false
				}
				continue
			}
			v := ""
			if a.header != nil {
				v = a.header(c.header)
			}
			if !c.cond.match(v, v != "", r.deny) {
				return false
			}
		}
	}
	return true
}

func (r *rule) matchFrom(a *attrs) bool {
	for i := range r.from {
		s := &r.from[i]
		if s.principal.match(a.principal, a.principal != "", r.deny) &&
			s.namespace.match(a.namespace, a.namespace != "", r.deny) &&
			s.service.match(a.service, a.service != "", r.deny) &&
			(s.requestPrincipal.none() || s.requestPrincipal.match(a.reqPrin, a.reqPrin != "", r.deny)) {
			return true
		}
	}
	return false
}

func (r *rule) matchTo(a *attrs) bool {
	for i := range r.to {
		o := &r.to[i]
		if !o.ports.match(a.port, r.deny) {
			continue
		}
		if !a.http {
			// The method, path and host of a TCP connection are not
			// known: a DENY assumes the worst, an ALLOW cannot rely
			// on them.
			if !o.httpOnly || r.deny {
				return true
			}
			continue
		}
		if o.method.match(a.method, a.method != "", r.deny) &&
			o.path.match(a.path, a.path != "", r.deny) &&
			o.host.match(a.host, a.host != "", r.deny) {
			return true
		}
	}
	return false
}
