package meshconfig

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/resource"
)

// GatewayTable is an ingress gateway's GatewayRoutes compiled: rules by
// host, most specific first. Immutable once built.
type GatewayTable struct {
	exact map[string][]*GatewayRule
	wild  []wildHost // longest suffix first
	hosts int
	// services are the rules' destinations, sorted, without duplicates.
	services []string
}

type wildHost struct {
	suffix string // ".example.com" for *.example.com
	rules  []*GatewayRule
}

// GatewayRule is one rule of one GatewayRoute.
type GatewayRule struct {
	// Route is the GatewayRoute's "namespace/name", Index the rule's.
	Route string
	Index int
	// Prefix is match.pathPrefix.
	Prefix string
	// Service is the destination's key, "name.namespace".
	Service string
	// Limiter is the rule's token bucket, nil without a rateLimit;
	// PerCaller keys it by end user (else one bucket for the rule).
	Limiter   *ratelimit.Limiter
	PerCaller bool
	// Ref names the rule in answers: "GatewayRoute ns/name rule i".
	Ref string
}

// Len is the number of host names routed.
func (t *GatewayTable) Len() int {
	if t == nil {
		return 0
	}
	return t.hosts
}

// Services are the rules' destination keys ("name.namespace"), sorted.
// The caller must not modify them.
func (t *GatewayTable) Services() []string {
	if t == nil {
		return nil
	}
	return t.services
}

// Match returns the rule for a request's Host (port and trailing dot
// ignored, any case) and canonical path, or nil. Exact host names come
// before wildcards, the longest wildcard first; within a host, the longest
// path prefix wins, then the route (namespace, name) and rule order.
func (t *GatewayTable) Match(host, path string) *GatewayRule {
	if t == nil {
		return nil
	}
	host = routeHost(host)
	if r := matchPath(t.exact[host], path); r != nil {
		return r
	}
	for i := range t.wild {
		w := &t.wild[i]
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			if r := matchPath(w.rules, path); r != nil {
				return r
			}
		}
	}
	return nil
}

func matchPath(rules []*GatewayRule, path string) *GatewayRule {
	for _, r := range rules {
		if prefixMatches(r.Prefix, path) {
			return r
		}
	}
	return nil
}

// prefixMatches matches by path segments: "/api" takes /api and /api/...,
// not /apis; a prefix ending in '/' takes what starts with it.
func prefixMatches(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// routeHost is host without port or trailing dot, lower case; it
// allocates only for upper-case names.
func routeHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// gwLimiters keeps the bucket of an unchanged rule across snapshots.
var gwLimiters = map[string]*ratelimit.Limiter{}

func compileGatewayRoutes(raws [][]byte) (*GatewayTable, error) {
	if len(raws) == 0 {
		return nil, nil
	}
	type routed struct {
		ns, name string
		rule     *GatewayRule
	}
	byHost := map[string][]routed{}
	var t0 []string
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("gateway_routes[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return nil, fmt.Errorf("gateway_routes[%d]: %w", i, err)
		}
		spec, err := resource.GatewayRouteSpecOf(&o)
		if err != nil {
			return nil, fmt.Errorf("gateway_routes[%d]: %w", i, err)
		}
		ref := o.Metadata.Namespace + "/" + o.Metadata.Name
		key := string(bytes.TrimSpace(raw))
		for j, r := range spec.Rules {
			gr := &GatewayRule{Route: ref, Index: j, Prefix: r.Match.PathPrefix, Service: ServiceKey(r.Service, o.Metadata.Namespace),
				Ref: "GatewayRoute " + ref + " rule " + strconv.Itoa(j)}
			if rl := r.RateLimit; rl != nil {
				gr.PerCaller = rl.Per == resource.GatewayRateLimitPerCaller
				gr.Limiter = reuseLimiter(key+"#"+strconv.Itoa(j), float64(rl.RequestsPerSecond), rl.Burst)
			}
			t0 = append(t0, gr.Service)
			for _, h := range spec.Hosts {
				byHost[h] = append(byHost[h], routed{o.Metadata.Namespace, o.Metadata.Name, gr})
			}
		}
	}
	slices.Sort(t0)
	t := &GatewayTable{exact: map[string][]*GatewayRule{}, hosts: len(byHost), services: slices.Compact(t0)}
	for h, rs := range byHost {
		slices.SortStableFunc(rs, func(a, b routed) int {
			return cmp.Or(cmp.Compare(len(b.rule.Prefix), len(a.rule.Prefix)), cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name), cmp.Compare(a.rule.Index, b.rule.Index))
		})
		rules := make([]*GatewayRule, len(rs))
		for i, r := range rs {
			rules[i] = r.rule
		}
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			t.wild = append(t.wild, wildHost{suffix: suffix, rules: rules})
		} else {
			t.exact[h] = rules
		}
	}
	slices.SortFunc(t.wild, func(a, b wildHost) int {
		return cmp.Or(cmp.Compare(len(b.suffix), len(a.suffix)), cmp.Compare(a.suffix, b.suffix))
	})
	return t, nil
}

// reuseLimiter returns the limiter kept under key, or a new one.
func reuseLimiter(key string, rps float64, burst int) *ratelimit.Limiter {
	limitersMu.Lock()
	defer limitersMu.Unlock()
	l := gwLimiters[key]
	if l == nil {
		if len(gwLimiters) >= 1024 {
			clear(gwLimiters)
		}
		l = ratelimit.New(rps, burst)
		gwLimiters[key] = l
	}
	return l
}
