package resource

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/trellismesh/trellis/internal/names"
)

// KindGatewayRoute sends requests an ingress gateway (`trellis gateway`)
// receives for some hosts and path prefixes to mesh services
// (docs/gateway.md).
const KindGatewayRoute = "GatewayRoute"

// GatewayRoleLabel is the workload label a gateway registers with
// (value GatewayRoleValue): the control plane sends GatewayRoutes only to
// workloads that carry it.
const (
	GatewayRoleLabel = "trellis.dev/role"
	GatewayRoleValue = "gateway"
)

// Per values of GatewayRateLimit.
const (
	GatewayRateLimitPerRoute  = "route"  // one bucket for the rule
	GatewayRateLimitPerCaller = "caller" // a bucket per end user, or per client address without a token
)

// GatewayRouteSpec routes hosts to services of the route's namespace.
type GatewayRouteSpec struct {
	// Hosts are the Host (and SNI) names served: exact names or
	// "*.domain", which matches any name ending in ".domain" (not
	// "domain" itself). Required.
	Hosts []string `json:"hosts"`
	// Gateways, when set, limits the route to these gateways, each
	// "SERVICE.NAMESPACE"; empty means every gateway.
	Gateways []string `json:"gateways,omitempty"`
	// Rules are tried longest path prefix first.
	Rules []GatewayRouteRule `json:"rules"`
}

// GatewayRouteRule sends one path prefix to one service.
type GatewayRouteRule struct {
	Match GatewayRouteMatch `json:"match"`
	// Service is a service of the route's namespace. Required.
	Service string `json:"service"`
	// RateLimit, when set, is a token bucket for this rule.
	RateLimit *GatewayRateLimit `json:"rateLimit,omitempty"`
}

// GatewayRouteMatch selects requests by path.
type GatewayRouteMatch struct {
	// PathPrefix matches by path segments: "/api" matches /api and
	// /api/..., not /apis; one ending in "/" matches paths starting with
	// it. Default "/", every path.
	PathPrefix string `json:"pathPrefix,omitempty"`
}

// GatewayRateLimit is a local token bucket on a gateway route rule.
type GatewayRateLimit struct {
	RequestsPerSecond int `json:"requestsPerSecond"`
	// Burst is the bucket's size; default RequestsPerSecond.
	Burst int `json:"burst,omitempty"`
	// Per is GatewayRateLimitPerRoute (default) or
	// GatewayRateLimitPerCaller.
	Per string `json:"per,omitempty"`
}

// Bounds of a GatewayRoute.
const (
	maxGatewayHosts = 64
	maxGatewayRules = 128
)

// GatewayRouteSpecOf decodes, defaults and checks the spec of a
// GatewayRoute.
func GatewayRouteSpecOf(o *Object) (GatewayRouteSpec, error) {
	var errs errorList
	spec := gatewayRouteSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return GatewayRouteSpec{}, err
	}
	return spec, nil
}

func gatewayRouteSpec(errs *errorList, raw json.RawMessage) GatewayRouteSpec {
	var s GatewayRouteSpec
	decodeSpec(errs, raw, &s)
	if len(s.Hosts) == 0 && !errs.failedAt("spec.hosts") {
		errs.add("spec.hosts", "required: the host names this route serves, e.g. [shop.example.com]")
	}
	if len(s.Hosts) > maxGatewayHosts {
		errs.add("spec.hosts", "%d hosts, more than the %d allowed", len(s.Hosts), maxGatewayHosts)
	}
	for i, h := range s.Hosts {
		h = strings.ToLower(h)
		s.Hosts[i] = h
		if !validRouteHost(h) {
			errs.add(fmt.Sprintf("spec.hosts[%d]", i), "%s: want a DNS name such as shop.example.com, or *.example.com", quote(h))
		}
	}
	for i, g := range s.Gateways {
		name, ns, ok := strings.Cut(g, ".")
		if !ok || !names.IsDNSLabel(name) || !names.IsDNSLabel(ns) {
			errs.add(fmt.Sprintf("spec.gateways[%d]", i), "%s: want SERVICE.NAMESPACE of a gateway, e.g. public.ingress", quote(g))
		}
	}
	if len(s.Rules) == 0 && !errs.failedAt("spec.rules") {
		errs.add("spec.rules", "required: at least one rule, e.g. [{match: {pathPrefix: /}, service: frontend}]")
	}
	if len(s.Rules) > maxGatewayRules {
		errs.add("spec.rules", "%d rules, more than the %d allowed", len(s.Rules), maxGatewayRules)
	}
	for i := range s.Rules {
		r := &s.Rules[i]
		at := fmt.Sprintf("spec.rules[%d]", i)
		if r.Match.PathPrefix == "" {
			r.Match.PathPrefix = "/"
		}
		if p := r.Match.PathPrefix; !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#%\\ \t") || strings.Contains(p, "//") || len(p) > 1024 {
			errs.add(at+".match.pathPrefix", "%s: want an absolute path without query, percent-encoding or doubled slashes, e.g. /api/", quote(p))
		}
		if !names.IsDNSLabel(r.Service) {
			errs.add(at+".service", "%s %s (a service of the route's namespace)", quote(r.Service), names.DNSLabelRule)
		}
		if rl := r.RateLimit; rl != nil {
			if rl.Per == "" {
				rl.Per = GatewayRateLimitPerRoute
			}
			if rl.Burst == 0 {
				rl.Burst = rl.RequestsPerSecond
			}
			if rl.RequestsPerSecond < 1 || rl.RequestsPerSecond > 1000000 {
				errs.add(at+".rateLimit.requestsPerSecond", "required, from 1 to 1000000, got %d", rl.RequestsPerSecond)
			}
			if rl.Burst < 1 || rl.Burst > 10000000 {
				errs.add(at+".rateLimit.burst", "must be from 1 to 10000000 (default requestsPerSecond), got %d", rl.Burst)
			}
			canonicalEnum(errs, at+".rateLimit.per", &rl.Per, GatewayRateLimitPerRoute, GatewayRateLimitPerCaller)
		}
	}
	return s
}

// validRouteHost accepts a lower-case DNS name or "*." and one.
func validRouteHost(h string) bool {
	return names.IsDNSSubdomain(strings.TrimPrefix(h, "*."))
}
