package meshconfig

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Route is one Route compiled: how this proxy steers the requests its
// app addresses to one service (docs/traffic.md). Immutable once
// built; matching and choosing allocate nothing.
type Route struct {
	// Ref is "namespace/name".
	Ref string
	// Service is the key ("name.namespace") callers address; Name and
	// Namespace its parts.
	Service         string
	Name, Namespace string
	Rules           []*RouteRule
	// ResponseRewrites: some rule rewrites response headers (the HTTP/1.1
	// fast path leaves such services' requests to net/http).
	ResponseRewrites bool
}

// RouteRule is one rule of a Route.
type RouteRule struct {
	// Index is the rule's place in spec.rules.
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

// Match returns the first rule that takes the request, or nil (the
// service itself). path may carry a query.
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
	return nil
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

// compileRoutes fills out.Routes by service key; two Routes for one
// service: the first by name wins.
func compileRoutes(out *Snapshot, raws [][]byte) error {
	if len(raws) == 0 {
		return nil
	}
	out.Routes = make(map[string]*Route, len(raws))
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		spec, err := resource.RouteSpecOf(&o)
		if err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
		r := RouteOf(o.Metadata.Namespace+"/"+o.Metadata.Name, o.Metadata.Namespace, &spec)
		if prev := out.Routes[r.Service]; prev == nil || r.Ref < prev.Ref {
			out.Routes[r.Service] = r
		}
	}
	return nil
}

// RouteOf compiles a checked Route spec of namespace ns.
func RouteOf(ref, ns string, spec *resource.RouteSpec) *Route {
	r := &Route{Ref: ref, Service: ServiceKey(spec.Service, ns), Name: spec.Service, Namespace: ns}
	for i, sr := range spec.Rules {
		rule := &RouteRule{Index: i}
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
			r.ResponseRewrites = r.ResponseRewrites || rule.Response != nil
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
		r.Rules = append(r.Rules, rule)
	}
	return r
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
