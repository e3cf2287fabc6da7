package gatewayapi

import (
	"fmt"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/resource"
)

// GRPCRoute maps a GRPCRoute onto Trellis Routes, one per Service parent.
func GRPCRoute(gr *gwapiv1.GRPCRoute, services Services) Result {
	r := &route{kind: "GRPCRoute", namespace: gr.Namespace, name: gr.Name, generation: gr.Generation, parents: gr.Spec.ParentRefs}
	for i, sr := range gr.Spec.Rules {
		at := fmt.Sprintf("spec.rules[%d]", i)
		var rule resource.RouteRule
		for j, m := range sr.Matches {
			rule.Matches = append(rule.Matches, r.grpcMatch(fmt.Sprintf("%s.matches[%d]", at, j), m))
		}
		for j, f := range sr.Filters {
			fat := fmt.Sprintf("%s.filters[%d]", at, j)
			switch f.Type {
			case gwapiv1.GRPCRouteFilterRequestHeaderModifier:
				rewrite(&rule, f.RequestHeaderModifier, nil)
			case gwapiv1.GRPCRouteFilterResponseHeaderModifier:
				rewrite(&rule, nil, f.ResponseHeaderModifier)
			case gwapiv1.GRPCRouteFilterRequestMirror:
				r.mirror(fat, f.RequestMirror, services, &rule)
			default:
				r.unsupportedf("%s: filter %s is not supported (Trellis takes RequestHeaderModifier, ResponseHeaderModifier and RequestMirror)", fat, f.Type)
			}
		}
		refs := make([]gwapiv1.BackendRef, 0, len(sr.BackendRefs))
		for j, b := range sr.BackendRefs {
			if len(b.Filters) > 0 {
				r.unsupportedf("%s.backendRefs[%d].filters: filters on a backend are not supported; put them on the rule", at, j)
			}
			refs = append(refs, b.BackendRef)
		}
		r.backends(at, refs, services, &rule)
		if sr.SessionPersistence != nil {
			r.unsupportedf("%s.sessionPersistence: not supported", at)
		}
		r.rules = append(r.rules, rule)
	}
	r.rules = byPrecedence(r.rules, grpcPrecedence)
	return r.result(services)
}

func (r *route) grpcMatch(at string, m gwapiv1.GRPCRouteMatch) resource.RouteMatch {
	var out resource.RouteMatch
	if mm := m.Method; mm != nil {
		if mm.Type != nil && *mm.Type != gwapiv1.GRPCMethodMatchExact {
			r.unsupportedf("%s.method.type: %s is not supported (Exact is)", at, *mm.Type)
		} else {
			g := &resource.GRPCMatch{}
			if mm.Service != nil {
				g.Service = *mm.Service
			}
			if mm.Method != nil {
				g.Method = *mm.Method
			}
			out.GRPC = g
		}
	}
	for k, h := range m.Headers {
		if h.Type != nil && *h.Type != gwapiv1.GRPCHeaderMatchExact {
			r.unsupportedf("%s.headers[%d].type: %s is not supported (Exact is)", at, k, *h.Type)
			continue
		}
		addHeader(&out, string(h.Name), h.Value)
	}
	return out
}
