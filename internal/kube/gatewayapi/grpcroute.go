package gatewayapi

import (
	"fmt"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// GRPCRoute maps a GRPCRoute onto Trellis Routes, one per Service parent.
func GRPCRoute(gr *gwapiv1.GRPCRoute, services Services) Result {
	r := &route{kind: meshconfig.KindGRPCRoute, namespace: gr.Namespace, name: gr.Name, generation: gr.Generation, parents: gr.Spec.ParentRefs}
	for i, sr := range gr.Spec.Rules {
		at := fmt.Sprintf("spec.rules[%d]", i)
		var rule resource.RouteRule
		for j, m := range sr.Matches {
			rule.Matches = append(rule.Matches, r.grpcMatch(fmt.Sprintf("%s.matches[%d]", at, j), m))
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
