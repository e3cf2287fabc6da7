package meshconfig

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Route is one Route compiled: how this proxy steers the requests its
// app addresses to one service (docs/traffic.md). Immutable once
// built; matching and choosing allocate nothing.
type Route struct {
	// Ref is "namespace/name": the Route's, or for merged Routes the
	// first's.
	Ref string
	// Merged are the Routes whose rules Rules holds, in tie order (one
	// unless Routes made of Gateway API routes were merged); Shadowed are
	// other Routes for the service, not applied (CompileRoutes).
	Merged, Shadowed []string
	// Service is the key ("name.namespace") callers address; Name and
	// Namespace its parts.
	Service         string
	Name, Namespace string
	Rules           []*RouteRule
	// Unmatched answers the requests no rule takes (spec.unmatched: an
	// abort of all of them); nil sends them to the service itself.
	Unmatched *RouteRule
	// ResponseRewrites: some rule rewrites response headers (the HTTP/1.1
	// fast path leaves such services' requests to net/http).
	ResponseRewrites bool
}

// RouteRule is one rule of a Route.
type RouteRule struct {
	// Ref is the Route ("namespace/name") the rule is of, and Index its
	// place in spec.rules (-1: the Route's Unmatched).
	Ref     string
	Index   int
	Matches []RouteMatch
	// Backends are service keys with their weights; cum are the running
	// sums, total the last.
	Backends []RouteBackend
	cum      []uint32
	total    uint32
	Request  *HeaderRewrite
	Response *HeaderRewrite
	Mirror   *RouteMirror
	Delay    *RouteDelay
	Abort    *RouteAbort
}

// RouteBackend is a backend service and its weight.
type RouteBackend struct {
	Key    string
	Weight int
}

// RouteMatch is one match of a rule; every set field must match.
type RouteMatch struct {
	Exact, Prefix string
	Regex         *regexp.Regexp
	Method        string
	// Headers have canonical names (http.CanonicalHeaderKey).
	Headers []HeaderValue
	// GRPC: the path must be /GRPCService/GRPCMethod (an empty part
	// matches any).
	GRPC                    bool
	GRPCService, GRPCMethod string
}

// HeaderValue is a header name (canonical, and in lower case for
// HTTP/2) and a value.
type HeaderValue struct{ Name, Lower, Value string }

// HeaderRewrite removes, sets, then adds fields; names are canonical
// (RemoveLower: in lower case).
type HeaderRewrite struct {
	Remove      []string
	RemoveLower []string
	Set         []HeaderValue
	Add         []HeaderValue
}

// RouteMirror copies a share of the rule's requests to Key.
type RouteMirror struct {
	Key     string
	Percent float64
	chance  Chance
}

// RouteDelay holds a share of the requests for Fixed.
type RouteDelay struct {
	Fixed   time.Duration
	Percent float64
	chance  Chance
}

// RouteAbort answers a share of the requests with Status (HTTP) or
// GRPCStatus (gRPC calls; -1: use Status).
type RouteAbort struct {
	Status, GRPCStatus int
	Percent            float64
	chance             Chance
	// Unmatched: the answer to a request no rule took (spec.unmatched),
	// not an injected fault.
	Unmatched bool
}

// GRPCCode is the gRPC status a gRPC call is answered with: GRPCStatus,
// else Status mapped as gRPC maps HTTP errors.
func (a *RouteAbort) GRPCCode() int {
	if a.GRPCStatus >= 0 {
		return a.GRPCStatus
	}
	switch a.Status {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// Chance is a probability as a threshold on a random uint32.
type Chance uint64

// chanceOf turns a percent (0 to 100) into a Chance.
func chanceOf(percent float64) Chance { return Chance(percent / 100 * (1 << 32)) }

// Hit draws: true with the chance's probability.
func (c Chance) Hit() bool { return c != 0 && uint64(rand.Uint32()) < uint64(c) }

// Mirrors draws whether to mirror a request.
func (m *RouteMirror) Mirrors() bool { return m != nil && m.chance.Hit() }

// Delays draws whether to delay a request.
func (d *RouteDelay) Delays() bool { return d != nil && d.chance.Hit() }

// Aborts draws whether to abort a request.
func (a *RouteAbort) Aborts() bool { return a != nil && a.chance.Hit() }

// Headers is what a route matches a request's fields with: *h1.Head,
// *h2relay.Request and http.Header all are.
type Headers interface{ Get(name string) string }

// Match returns the first rule that takes the request, else the Route's
// Unmatched (nil: the service itself). path may carry a query.
func (r *Route) Match(method, path string, h Headers) *RouteRule {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for _, rule := range r.Rules {
		if len(rule.Matches) == 0 {
			return rule
		}
		for i := range rule.Matches {
			if rule.Matches[i].matches(method, path, h) {
				return rule
			}
		}
	}
	return r.Unmatched
}

func (m *RouteMatch) matches(method, path string, h Headers) bool {
	if m.Method != "" && m.Method != method {
		return false
	}
	switch {
	case m.Exact != "" && path != m.Exact:
		return false
	case m.Prefix != "" && !pathHasPrefix(path, m.Prefix):
		return false
	case m.Regex != nil && !m.Regex.MatchString(path):
		return false
	}
	if m.GRPC {
		svc, meth, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		if !ok || !strings.HasPrefix(path, "/") || (m.GRPCService != "" && svc != m.GRPCService) || (m.GRPCMethod != "" && meth != m.GRPCMethod) {
			return false
		}
	}
	for _, hv := range m.Headers {
		if h.Get(hv.Name) != hv.Value {
			return false
		}
	}
	return true
}

// pathHasPrefix matches by segments (GatewayRoute's pathPrefix rule).
func pathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// Pick chooses a backend by weight: the rule's own backends, or "" when
// it has none (the service itself).
func (r *RouteRule) Pick() string {
	switch len(r.Backends) {
	case 0:
		return ""
	case 1:
		return r.Backends[0].Key
	}
	n := rand.Uint32N(r.total)
	for i, c := range r.cum {
		if n < c {
			return r.Backends[i].Key
		}
	}
	return r.Backends[len(r.Backends)-1].Key
}

// RouteServices returns the services the snapshot's routes send to
// (backends and mirrors), sorted, for a proxy to ask for early.
func (s *Snapshot) RouteServices() []string {
	seen := map[string]bool{}
	for _, r := range s.Routes {
		for _, rule := range r.Rules {
			for _, b := range rule.Backends {
				seen[b.Key] = true
			}
			if rule.Mirror != nil {
				seen[rule.Mirror.Key] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// LabelGatewayAPIKind marks a Route made of a Gateway API route: its
// value is the route's kind, KindHTTPRoute or KindGRPCRoute. The Routes
// so marked of one service are merged (see CompileRoutes).
const LabelGatewayAPIKind = "trellis.dev/gateway-api-kind"

// AnnotationFrom names the Gateway API route a Route was made of:
// "KIND namespace/name". Merged Routes tie by that name.
const AnnotationFrom = "trellis.dev/from"

// The Gateway API kinds LabelGatewayAPIKind names.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// RouteInput is one checked Route resource, as CompileRoutes takes it.
type RouteInput struct {
	// Ref is "namespace/name".
	Ref, Namespace string
	// GatewayAPIKind is the LabelGatewayAPIKind label: KindHTTPRoute,
	// KindGRPCRoute, or "" for a Trellis Route.
	GatewayAPIKind string
	// Created is the creation time of the Gateway API route it was made
	// of, and Origin that route's "namespace/name" (else Ref): on a tie
	// of precedence the older route's rules go first, then Origin's
	// order.
	Created time.Time
	Origin  string
	Spec    resource.RouteSpec
}

// RouteInputOf checks a Route resource.
func RouteInputOf(o *resource.Object) (RouteInput, error) {
	spec, err := resource.RouteSpecOf(o)
	if err != nil {
		return RouteInput{}, err
	}
	in := RouteInput{Ref: o.Metadata.Namespace + "/" + o.Metadata.Name, Namespace: o.Metadata.Namespace, Spec: spec}
	switch k := o.Metadata.Labels[LabelGatewayAPIKind]; k {
	case KindHTTPRoute, KindGRPCRoute:
		in.GatewayAPIKind = k
	}
	if t := o.Metadata.CreationTimestamp; t != nil {
		in.Created = *t
	}
	in.Origin = in.Ref
	if _, from, ok := strings.Cut(o.Metadata.Annotations[AnnotationFrom], " "); ok && from != "" {
		in.Origin = from
	}
	return in, nil
}

// compileRoutes fills out.Routes by service key (see CompileRoutes).
func compileRoutes(out *Snapshot, raws [][]byte) error {
	if len(raws) == 0 {
		return nil
	}
	ins := make([]RouteInput, 0, len(raws))
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		in, err := RouteInputOf(&o)
		if err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		ins = append(ins, in)
	}
	out.Routes = CompileRoutes(ins)
	return nil
}

// CompileRoutes compiles Routes into one Route per service key:
//   - a Trellis Route (no LabelGatewayAPIKind) applies alone: with
//     several for one service, the first by name wins, and the Routes
//     made of Gateway API routes for that service are not applied;
//   - otherwise the Routes made of Gateway API routes merge, as the
//     Gateway API merges the routes attached to one Service: their
//     rules (one match each) are ordered by precedence (MatchPrecedence
//     or GRPCMatchPrecedence), then the older route first, then by the
//     Gateway API route's "namespace/name" (RouteInput.Origin), then in
//     written order. When both kinds attach to a service, the GRPCRoutes
//     apply and the HTTPRoutes do not (GEP-1426: one route type per
//     Service, GRPCRoute first). The merged Route's Unmatched is its
//     first route's spec.unmatched.
//
// The Routes not applied are listed in the winner's Shadowed.
func CompileRoutes(ins []RouteInput) map[string]*Route {
	type group struct{ native, grpc, http []*RouteInput }
	groups := map[string]*group{}
	for i := range ins {
		in := &ins[i]
		key := ServiceKey(in.Spec.Service, in.Namespace)
		g := groups[key]
		if g == nil {
			g = &group{}
			groups[key] = g
		}
		switch in.GatewayAPIKind {
		case KindGRPCRoute:
			g.grpc = append(g.grpc, in)
		case KindHTTPRoute:
			g.http = append(g.http, in)
		default:
			g.native = append(g.native, in)
		}
	}
	out := make(map[string]*Route, len(groups))
	for key, g := range groups {
		var r *Route
		var shadowed [][]*RouteInput
		switch {
		case len(g.native) > 0:
			slices.SortFunc(g.native, func(a, b *RouteInput) int { return strings.Compare(a.Ref, b.Ref) })
			r = RouteOf(g.native[0].Ref, g.native[0].Namespace, &g.native[0].Spec)
			shadowed = [][]*RouteInput{g.native[1:], g.grpc, g.http}
		case len(g.grpc) > 0:
			r = mergeRoutes(g.grpc, GRPCMatchPrecedence)
			shadowed = [][]*RouteInput{g.http}
		default:
			r = mergeRoutes(g.http, MatchPrecedence)
		}
		for _, s := range shadowed {
			for _, in := range s {
				r.Shadowed = append(r.Shadowed, in.Ref)
			}
		}
		slices.Sort(r.Shadowed)
		out[key] = r
	}
	return out
}

// mergeRoutes merges the Routes of one service made of Gateway API
// routes of one kind.
func mergeRoutes(ins []*RouteInput, precedence func(a, b resource.RouteMatch) int) *Route {
	slices.SortFunc(ins, func(a, b *RouteInput) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.Origin, b.Origin), strings.Compare(a.Ref, b.Ref))
	})
	type ranked struct {
		in    *RouteInput
		index int
		rule  resource.RouteRule
	}
	var rules []ranked
	for _, in := range ins {
		for i, sr := range in.Spec.Rules {
			for _, one := range SplitMatches(sr) {
				rules = append(rules, ranked{in, i, one})
			}
		}
	}
	// ins are in tie order already: a stable sort keeps it.
	slices.SortStableFunc(rules, func(a, b ranked) int { return RulePrecedence(a.rule, b.rule, precedence) })
	first := ins[0]
	r := &Route{Ref: first.Ref, Service: ServiceKey(first.Spec.Service, first.Namespace), Name: first.Spec.Service, Namespace: first.Namespace}
	for _, in := range ins {
		r.Merged = append(r.Merged, in.Ref)
	}
	for _, rk := range rules {
		rule := ruleOf(rk.in.Ref, rk.index, &rk.rule, rk.in.Namespace)
		r.ResponseRewrites = r.ResponseRewrites || rule.Response != nil
		r.Rules = append(r.Rules, rule)
	}
	r.Unmatched = unmatchedOf(first.Ref, first.Spec.Unmatched)
	return r
}

// SplitMatches gives each match of a rule a rule of its own (a rule
// without matches stays as it is), for ordering matches by precedence.
func SplitMatches(r resource.RouteRule) []resource.RouteRule {
	if len(r.Matches) <= 1 {
		return []resource.RouteRule{r}
	}
	out := make([]resource.RouteRule, 0, len(r.Matches))
	for _, m := range r.Matches {
		c := r
		c.Matches = []resource.RouteMatch{m}
		out = append(out, c)
	}
	return out
}

// RulePrecedence orders two rules of at most one match each: a rule
// without matches (it matches everything) last, else by precedence of
// their matches.
func RulePrecedence(a, b resource.RouteRule, precedence func(a, b resource.RouteMatch) int) int {
	if len(a.Matches) == 0 || len(b.Matches) == 0 {
		return cmp.Compare(len(b.Matches), len(a.Matches))
	}
	return precedence(a.Matches[0], b.Matches[0])
}

// MatchPrecedence orders HTTP matches as the Gateway API orders an
// HTTPRoute's: an exact path, then the longest prefix, then a regular
// expression, then no path; then a method; then the most headers.
func MatchPrecedence(a, b resource.RouteMatch) int {
	class := func(m resource.RouteMatch) (int, int) {
		switch {
		case m.Path == nil:
			return 3, 0
		case m.Path.Exact != "":
			return 0, len(m.Path.Exact)
		case m.Path.Prefix != "":
			return 1, len(m.Path.Prefix)
		}
		return 2, 0
	}
	ca, la := class(a)
	cb, lb := class(b)
	return cmp.Or(cmp.Compare(ca, cb), cmp.Compare(lb, la), cmp.Compare(hasMethod(b), hasMethod(a)), cmp.Compare(len(b.Headers), len(a.Headers)))
}

// GRPCMatchPrecedence orders gRPC matches as the Gateway API orders a
// GRPCRoute's: the longest service, then the longest method, then the
// most headers.
func GRPCMatchPrecedence(a, b resource.RouteMatch) int {
	svc := func(m resource.RouteMatch) (int, int) {
		if m.GRPC == nil {
			return 0, 0
		}
		return len(m.GRPC.Service), len(m.GRPC.Method)
	}
	sa, ma := svc(a)
	sb, mb := svc(b)
	return cmp.Or(cmp.Compare(sb, sa), cmp.Compare(mb, ma), cmp.Compare(len(b.Headers), len(a.Headers)))
}

func hasMethod(m resource.RouteMatch) int {
	if m.Method != "" {
		return 1
	}
	return 0
}

// RouteOf compiles a checked Route spec of namespace ns.
func RouteOf(ref, ns string, spec *resource.RouteSpec) *Route {
	r := &Route{Ref: ref, Service: ServiceKey(spec.Service, ns), Name: spec.Service, Namespace: ns, Merged: []string{ref}}
	for i := range spec.Rules {
		rule := ruleOf(ref, i, &spec.Rules[i], ns)
		r.ResponseRewrites = r.ResponseRewrites || rule.Response != nil
		r.Rules = append(r.Rules, rule)
	}
	r.Unmatched = unmatchedOf(ref, spec.Unmatched)
	return r
}

// unmatchedOf is the rule that answers the requests no rule takes: an
// abort of every request.
func unmatchedOf(ref string, u *resource.RouteUnmatched) *RouteRule {
	if u == nil {
		return nil
	}
	a := &RouteAbort{Status: u.Status, GRPCStatus: -1, Percent: 100, chance: chanceOf(100), Unmatched: true}
	if u.GRPCStatus != nil {
		a.GRPCStatus = *u.GRPCStatus
	}
	return &RouteRule{Ref: ref, Index: -1, Abort: a}
}

// ruleOf compiles spec.rules[i] of the Route ref.
func ruleOf(ref string, i int, sr *resource.RouteRule, ns string) *RouteRule {
	rule := &RouteRule{Ref: ref, Index: i}
	for _, sm := range sr.Matches {
		m := RouteMatch{Method: sm.Method}
		if p := sm.Path; p != nil {
			m.Exact, m.Prefix = p.Exact, p.Prefix
			if p.Regex != "" {
				m.Regex = regexp.MustCompile("^(?:" + p.Regex + ")$") // checked by RouteSpecOf
			}
		}
		if g := sm.GRPC; g != nil {
			m.GRPC, m.GRPCService, m.GRPCMethod = true, g.Service, g.Method
		}
		m.Headers = headerValues(sm.Headers)
		rule.Matches = append(rule.Matches, m)
	}
	var sum uint32
	for _, b := range sr.Backends {
		w := b.WeightOf()
		if w == 0 {
			continue
		}
		sum += uint32(w)
		rule.Backends = append(rule.Backends, RouteBackend{Key: ServiceKey(b.Service, ns), Weight: w})
		rule.cum = append(rule.cum, sum)
	}
	rule.total = sum
	if h := sr.Headers; h != nil {
		rule.Request, rule.Response = rewriteOf(h.Request), rewriteOf(h.Response)
	}
	if m := sr.Mirror; m != nil {
		p := m.PercentOf()
		rule.Mirror = &RouteMirror{Key: ServiceKey(m.Service, ns), Percent: p, chance: chanceOf(p)}
	}
	if f := sr.Fault; f != nil {
		if d := f.Delay; d != nil {
			rule.Delay = &RouteDelay{Fixed: d.Fixed.Duration, Percent: d.Percent, chance: chanceOf(d.Percent)}
		}
		if a := f.Abort; a != nil {
			ab := &RouteAbort{Status: a.Status, GRPCStatus: -1, Percent: a.Percent, chance: chanceOf(a.Percent)}
			if a.GRPCStatus != nil {
				ab.GRPCStatus = *a.GRPCStatus
			}
			if ab.Status == 0 {
				ab.Status = http.StatusServiceUnavailable
			}
			rule.Abort = ab
		}
	}
	return rule
}

func headerValues(m map[string]string) []HeaderValue {
	out := make([]HeaderValue, 0, len(m))
	for k, v := range m {
		out = append(out, HeaderValue{Name: http.CanonicalHeaderKey(k), Lower: strings.ToLower(k), Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func rewriteOf(h *resource.HeaderRewrite) *HeaderRewrite {
	if h == nil || len(h.Set)+len(h.Add)+len(h.Remove) == 0 {
		return nil
	}
	w := &HeaderRewrite{Set: headerValues(h.Set), Add: headerValues(h.Add)}
	for _, k := range h.Remove {
		w.Remove = append(w.Remove, http.CanonicalHeaderKey(k))
		w.RemoveLower = append(w.RemoveLower, strings.ToLower(k))
	}
	return w
}

// Apply rewrites an http.Header.
func (w *HeaderRewrite) Apply(h http.Header) {
	if w == nil {
		return
	}
	for _, k := range w.Remove {
		delete(h, k)
	}
	for _, f := range w.Set {
		h[f.Name] = []string{f.Value}
	}
	for _, f := range w.Add {
		h[f.Name] = append(h[f.Name], f.Value)
	}
}
