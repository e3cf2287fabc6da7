package gatewayapi

import (
	"fmt"
	"strings"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// HTTPRoute maps an HTTPRoute onto Trellis Routes, one per Service parent.
func HTTPRoute(hr *gwapiv1.HTTPRoute, services Services) Result {
	r := &route{kind: meshconfig.KindHTTPRoute, namespace: hr.Namespace, name: hr.Name, generation: hr.Generation, parents: hr.Spec.ParentRefs}
	for i, sr := range hr.Spec.Rules {
		at := fmt.Sprintf("spec.rules[%d]", i)
		var rule resource.RouteRule
		for j, m := range sr.Matches {
			rule.Matches = append(rule.Matches, r.httpMatch(fmt.Sprintf("%s.matches[%d]", at, j), m))
		}
		for j, f := range sr.Filters {
			r.filter(fmt.Sprintf("%s.filters[%d]", at, j), string(f.Type), f.RequestHeaderModifier, f.ResponseHeaderModifier, f.RequestMirror, services, &rule)
		}
		refs := make([]gwapiv1.BackendRef, 0, len(sr.BackendRefs))
		for j, b := range sr.BackendRefs {
			r.noBackendFilters(at, j, len(b.Filters))
			refs = append(refs, b.BackendRef)
		}
		r.backends(at, refs, services, &rule)
		if sr.Timeouts != nil {
			r.unsupportedf("%s.timeouts: not supported here; use a Trellis TrafficPolicy", at)
		}
		if sr.Retry != nil {
			r.unsupportedf("%s.retry: not supported here; use a Trellis TrafficPolicy", at)
		}
		if sr.SessionPersistence != nil {
			r.unsupportedf("%s.sessionPersistence: not supported", at)
		}
		r.rules = append(r.rules, rule)
	}
	r.rules = byPrecedence(r.rules, httpPrecedence)
	return r.result(services)
}

func (r *route) httpMatch(at string, m gwapiv1.HTTPRouteMatch) resource.RouteMatch {
	var out resource.RouteMatch
	if p := m.Path; p != nil {
		value := "/"
		if p.Value != nil {
			value = *p.Value
		}
		typ := gwapiv1.PathMatchPathPrefix
		if p.Type != nil {
			typ = *p.Type
		}
		switch typ {
		case gwapiv1.PathMatchExact:
			out.Path = &resource.PathMatch{Exact: value}
		case gwapiv1.PathMatchPathPrefix:
			// Both match by path segments, and the Gateway API ignores
			// a trailing slash; "/" matches every path.
			if v := strings.TrimRight(value, "/"); v != "" {
				out.Path = &resource.PathMatch{Prefix: v}
			}
		case gwapiv1.PathMatchRegularExpression:
			out.Path = &resource.PathMatch{Regex: value}
		default:
			r.unsupportedf("%s.path.type: %s is not supported", at, typ)
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for k, h := range m.Headers {
		if h.Type != nil && *h.Type != gwapiv1.HeaderMatchExact {
			r.unsupportedf("%s.headers[%d].type: %s is not supported (Exact is)", at, k, *h.Type)
			continue
		}
		addHeader(&out, string(h.Name), h.Value)
	}
	if len(m.QueryParams) > 0 {
		r.unsupportedf("%s.queryParams: not supported", at)
	}
	return out
}

// addHeader keeps the first match of a name, as the Gateway API asks.
func addHeader(m *resource.RouteMatch, name, value string) {
	if m.Headers == nil {
		m.Headers = map[string]string{}
	}
	for k := range m.Headers {
		if strings.EqualFold(k, name) {
			return
		}
	}
	m.Headers[name] = value
}
