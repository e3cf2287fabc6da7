package resource

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/names"
)

// KindRoute splits, steers, mirrors and fault-injects the requests
// callers address to one service (docs/traffic.md). Like a
// TrafficPolicy it applies on the caller's side, in every proxy that
// calls spec.service.
const KindRoute = "Route"

// RouteSpec is the routing of requests addressed to one service of the
// route's namespace.
type RouteSpec struct {
	// Service is the service callers address, in the route's namespace.
	// Required.
	Service string `json:"service"`
	// Rules are tried in order; the first whose matches match takes the
	// request. A request no rule takes goes to Service itself, unless
	// Unmatched is set.
	Rules []RouteRule `json:"rules"`
	// Unmatched answers the requests no rule takes, instead of sending
	// them to Service (the Routes made of Gateway API routes set
	// {status: 404}, as the Gateway API asks).
	Unmatched *RouteUnmatched `json:"unmatched,omitempty"`
}

// RouteUnmatched is the answer to a request no rule of a Route takes:
// HTTP requests get Status, gRPC calls a trailers-only answer with
// GRPCStatus (when set; else Status mapped as gRPC maps HTTP, 404 to 12
// UNIMPLEMENTED).
type RouteUnmatched struct {
	Status     int  `json:"status"`
	GRPCStatus *int `json:"grpcStatus,omitempty"`
}

// RouteRule is where matching requests go and what happens on the way.
type RouteRule struct {
	// Matches: any one matching takes the request; empty matches every
	// request.
	Matches []RouteMatch `json:"matches,omitempty"`
	// Backends share the rule's requests by weight; empty means Service
	// alone.
	Backends []RouteBackend `json:"backends,omitempty"`
	// Headers rewrites the request before it is sent and the response
	// before it is answered.
	Headers *RouteHeaders `json:"headers,omitempty"`
	Mirror  *RouteMirror  `json:"mirror,omitempty"`
	Fault   *RouteFault   `json:"fault,omitempty"`
}

// RouteMatch matches when every field set matches.
type RouteMatch struct {
	Path *PathMatch `json:"path,omitempty"`
	// Method is an HTTP method, such as GET.
	Method string `json:"method,omitempty"`
	// Headers must all be present with exactly these values (names in
	// any case).
	Headers map[string]string `json:"headers,omitempty"`
	// GRPC matches gRPC calls, whose path is /SERVICE/METHOD.
	GRPC *GRPCMatch `json:"grpc,omitempty"`
}

// PathMatch sets exactly one of its fields.
type PathMatch struct {
	Exact string `json:"exact,omitempty"`
	// Prefix matches by path segments: "/items" matches /items and
	// /items/..., not /itemsx; one ending in "/" matches paths starting
	// with it.
	Prefix string `json:"prefix,omitempty"`
	// Regex (RE2) must match the whole path, query excluded.
	Regex string `json:"regex,omitempty"`
}

// GRPCMatch matches a gRPC call: Service is the fully qualified service
// (pkg.Service), Method its method; empty fields match any.
type GRPCMatch struct {
	Service string `json:"service,omitempty"`
	Method  string `json:"method,omitempty"`
}

// RouteBackend is one service of the route's namespace and its share.
type RouteBackend struct {
	Service string `json:"service"`
	// Weight is from 0 to 1000; the shares are weight/sum. Default 1.
	Weight *int `json:"weight,omitempty"`
}

// RouteHeaders are header rewrites of the request and the response.
type RouteHeaders struct {
	Request  *HeaderRewrite `json:"request,omitempty"`
	Response *HeaderRewrite `json:"response,omitempty"`
}

// HeaderRewrite removes, then sets (replaces), then adds fields.
type HeaderRewrite struct {
	Set    map[string]string `json:"set,omitempty"`
	Add    map[string]string `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// RouteMirror sends a copy of Percent of the rule's requests to Service
// and drops its answers.
type RouteMirror struct {
	Service string `json:"service"`
	// Percent is from 0 to 100; default 100.
	Percent *float64 `json:"percent,omitempty"`
}

// RouteFault injects delays and errors into the rule's requests.
type RouteFault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds Percent of the requests for Fixed before sending them.
type FaultDelay struct {
	Fixed   Duration `json:"fixed"`
	Percent float64  `json:"percent"`
}

// FaultAbort answers Percent of the requests at once: HTTP requests with
// Status, gRPC calls with GRPCStatus (when set; else Status).
type FaultAbort struct {
	Status     int     `json:"status,omitempty"`
	GRPCStatus *int    `json:"grpcStatus,omitempty"`
	Percent    float64 `json:"percent"`
}

// Bounds of a Route.
const (
	maxRouteRules    = 64
	maxRouteBackends = 16
	maxRouteWeight   = 1000
	maxRouteMatches  = 16
	maxRouteHeaders  = 32
	maxRouteDelay    = time.Minute
)

// RouteSpecOf decodes, defaults and checks the spec of a Route.
func RouteSpecOf(o *Object) (RouteSpec, error) {
	var errs errorList
	spec := routeSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return RouteSpec{}, err
	}
	return spec, nil
}

// WeightOf is a backend's weight, its default applied.
func (b RouteBackend) WeightOf() int {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// PercentOf is a mirror's percent, its default applied.
func (m RouteMirror) PercentOf() float64 {
	if m.Percent == nil {
		return 100
	}
	return *m.Percent
}

func routeSpec(errs *errorList, raw json.RawMessage) RouteSpec {
	var s RouteSpec
	decodeSpec(errs, raw, &s)
	if !names.IsDNSLabel(s.Service) && !errs.failedAt("spec.service") {
		errs.add("spec.service", "%s %s (the service callers address, in the route's namespace)", quote(s.Service), names.DNSLabelRule)
	}
	if len(s.Rules) == 0 && !errs.failedAt("spec.rules") {
		errs.add("spec.rules", "required: at least one rule, e.g. [{backends: [{service: catalog-v2, weight: 10}, {service: catalog, weight: 90}]}]")
	}
	if len(s.Rules) > maxRouteRules {
		errs.add("spec.rules", "%d rules, more than the %d allowed", len(s.Rules), maxRouteRules)
	}
	for i := range s.Rules {
		checkRouteRule(errs, fmt.Sprintf("spec.rules[%d]", i), &s.Rules[i])
	}
	if u := s.Unmatched; u != nil {
		if u.Status < 400 || u.Status > 599 {
			errs.add("spec.unmatched.status", "must be an HTTP error status from 400 to 599, got %d (e.g. {status: 404})", u.Status)
		}
		if g := u.GRPCStatus; g != nil && (*g < 1 || *g > 16) {
			errs.add("spec.unmatched.grpcStatus", "must be a gRPC status code from 1 to 16, got %d", *g)
		}
	}
	return s
}

func checkRouteRule(errs *errorList, at string, r *RouteRule) {
	if len(r.Matches) > maxRouteMatches {
		errs.add(at+".matches", "%d matches, more than the %d allowed", len(r.Matches), maxRouteMatches)
	}
	for j := range r.Matches {
		checkRouteMatch(errs, fmt.Sprintf("%s.matches[%d]", at, j), &r.Matches[j])
	}
	if len(r.Backends) > maxRouteBackends {
		errs.add(at+".backends", "%d backends, more than the %d allowed", len(r.Backends), maxRouteBackends)
	}
	sum := 0
	for j, b := range r.Backends {
		bat := fmt.Sprintf("%s.backends[%d]", at, j)
		if !names.IsDNSLabel(b.Service) {
			errs.add(bat+".service", "%s %s (a service of the route's namespace)", quote(b.Service), names.DNSLabelRule)
		}
		if w := b.WeightOf(); w < 0 || w > maxRouteWeight {
			errs.add(bat+".weight", "must be from 0 to %d, got %d", maxRouteWeight, w)
		} else {
			sum += w
		}
	}
	if len(r.Backends) > 0 && sum == 0 && !errs.failedAt(at+".backends") {
		errs.add(at+".backends", "every weight is 0: give at least one backend a weight above 0")
	}
	if h := r.Headers; h != nil {
		checkHeaderRewrite(errs, at+".headers.request", h.Request)
		checkHeaderRewrite(errs, at+".headers.response", h.Response)
	}
	if m := r.Mirror; m != nil {
		if !names.IsDNSLabel(m.Service) {
			errs.add(at+".mirror.service", "%s %s (a service of the route's namespace)", quote(m.Service), names.DNSLabelRule)
		}
		checkPercent(errs, at+".mirror.percent", m.PercentOf())
	}
	if f := r.Fault; f != nil {
		if d := f.Delay; d != nil {
			checkDuration(errs, at+".fault.delay.fixed", d.Fixed.Duration, time.Millisecond, maxRouteDelay)
			checkPercent(errs, at+".fault.delay.percent", d.Percent)
		}
		if a := f.Abort; a != nil {
			if a.Status == 0 && a.GRPCStatus == nil {
				errs.add(at+".fault.abort", "set status (an HTTP status such as 503) and/or grpcStatus (such as 14, UNAVAILABLE)")
			}
			if a.Status != 0 && (a.Status < 200 || a.Status > 599) {
				errs.add(at+".fault.abort.status", "must be an HTTP status from 200 to 599, got %d", a.Status)
			}
			if g := a.GRPCStatus; g != nil && (*g < 1 || *g > 16) {
				errs.add(at+".fault.abort.grpcStatus", "must be a gRPC status code from 1 to 16, got %d", *g)
			}
			checkPercent(errs, at+".fault.abort.percent", a.Percent)
		}
		if f.Delay == nil && f.Abort == nil {
			errs.add(at+".fault", "set delay or abort, e.g. {abort: {status: 503, percent: 1}}")
		}
	}
}

func checkRouteMatch(errs *errorList, at string, m *RouteMatch) {
	if p := m.Path; p != nil {
		set := 0
		for _, v := range []string{p.Exact, p.Prefix, p.Regex} {
			if v != "" {
				set++
			}
		}
		if set != 1 {
			errs.add(at+".path", "set exactly one of exact, prefix or regex, e.g. {prefix: /items}")
		}
		for _, f := range []struct{ name, v string }{{"exact", p.Exact}, {"prefix", p.Prefix}} {
			if f.v != "" && (!strings.HasPrefix(f.v, "/") || strings.ContainsAny(f.v, "?# \t") || len(f.v) > 1024) {
				errs.add(at+".path."+f.name, "%s: want an absolute path without query, e.g. /items", quote(f.v))
			}
		}
		if p.Regex != "" {
			if len(p.Regex) > 1024 {
				errs.add(at+".path.regex", "longer than 1024 bytes")
			} else if _, err := regexp.Compile(p.Regex); err != nil {
				errs.add(at+".path.regex", "%s is not an RE2 regular expression: %v", quote(p.Regex), err)
			}
		}
	}
	if m.Method != "" {
		m.Method = strings.ToUpper(m.Method)
		if !names.IsHTTPToken(m.Method) {
			errs.add(at+".method", "%s is not an HTTP method", quote(m.Method))
		}
	}
	if len(m.Headers) > maxRouteHeaders {
		errs.add(at+".headers", "%d headers, more than the %d allowed", len(m.Headers), maxRouteHeaders)
	}
	for k := range m.Headers {
		if !names.IsHTTPToken(k) {
			errs.add(at+".headers", "%s is not a header name", quote(k))
		}
	}
	if g := m.GRPC; g != nil {
		if g.Service == "" && g.Method == "" {
			errs.add(at+".grpc", "set service and/or method, e.g. {service: shop.Catalog, method: List}")
		}
		if strings.ContainsAny(g.Service, "/ \t") || strings.ContainsAny(g.Method, "/ \t") {
			errs.add(at+".grpc", "service and method are names without slashes, e.g. {service: shop.Catalog, method: List}")
		}
		if m.Path != nil {
			errs.add(at+".grpc", "a match takes grpc or path, not both")
		}
	}
}

func checkHeaderRewrite(errs *errorList, at string, h *HeaderRewrite) {
	if h == nil {
		return
	}
	if len(h.Set)+len(h.Add)+len(h.Remove) > maxRouteHeaders {
		errs.add(at, "more than %d rewrites", maxRouteHeaders)
	}
	for _, m := range []map[string]string{h.Set, h.Add} {
		for k, v := range m {
			if !names.IsHTTPToken(k) || isHopHeader(k) {
				errs.add(at, "%s is not a header name a route may write", quote(k))
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				errs.add(at, "the value of %s holds a line break or NUL", quote(k))
			}
		}
	}
	for _, k := range h.Remove {
		if !names.IsHTTPToken(k) || isHopHeader(k) {
			errs.add(at+".remove", "%s is not a header name a route may remove", quote(k))
		}
	}
}

// isHopHeader reports framing and connection fields, which routes leave
// alone.
func isHopHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Host", "Connection", "Content-Length", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Keep-Alive", "Proxy-Connection":
		return true
	}
	return false
}

func checkPercent(errs *errorList, at string, p float64) {
	if !(p >= 0 && p <= 100) {
		errs.add(at, "must be from 0 to 100, got %v", p)
	}
}
