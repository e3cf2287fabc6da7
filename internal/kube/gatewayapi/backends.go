package gatewayapi

import (
	"fmt"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/resource"
)

// maxWeight is a Trellis backend's largest weight (the Gateway API's is
// 1,000,000).
const maxWeight = 1000

// service resolves a backend reference to a Service of the route's
// namespace, or says why not (and returns "").
func (r *route) service(at string, ref gwapiv1.BackendObjectReference, services Services) string {
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := r.namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	switch {
	case group != "" || kind != "Service":
		r.unresolvedf(ReasonInvalidKind, "%s: Trellis sends to Services (group \"\"), not %s %s", at, kind, groupName(group))
	case ns != r.namespace:
		r.unresolvedf(ReasonRefNotPermitted, "%s: Service %s/%s is in another namespace: Trellis routes within the route's namespace (ReferenceGrant is not supported)", at, ns, ref.Name)
	case !services(ns, string(ref.Name)):
		r.unresolvedf(ReasonBackendNotFound, "%s: Service %s/%s not found", at, ns, ref.Name)
	default:
		return string(ref.Name)
	}
	return ""
}

// backends converts a rule's backendRefs. The share of backends that do
// not resolve answers 500, as the Gateway API asks (an abort fault of
// that percent); so does a rule with no backend or only zero weights.
func (r *route) backends(at string, refs []gwapiv1.BackendRef, services Services, rule *resource.RouteRule) {
	sum, lost := 0, 0
	for j, b := range refs {
		bat := fmt.Sprintf("%s.backendRefs[%d]", at, j)
		w := 1
		if b.Weight != nil {
			w = int(*b.Weight)
		}
		if w > maxWeight {
			r.unsupportedf("%s.weight: %d is more than Trellis's %d; scale the rule's weights down", bat, w, maxWeight)
			continue
		}
		svc := r.service(bat, b.BackendObjectReference, services)
		if svc == "" {
			lost += w
			continue
		}
		rule.Backends = append(rule.Backends, resource.RouteBackend{Service: svc, Weight: &w})
		sum += w
	}
	switch {
	case sum == 0:
		rule.Backends = nil
		rule.Fault = &resource.RouteFault{Abort: &resource.FaultAbort{Status: 500, Percent: 100}}
	case lost > 0:
		rule.Fault = &resource.RouteFault{Abort: &resource.FaultAbort{Status: 500, Percent: 100 * float64(lost) / float64(sum+lost)}}
	}
}

// headers converts a RequestHeaderModifier or ResponseHeaderModifier.
func headers(f *gwapiv1.HTTPHeaderFilter) *resource.HeaderRewrite {
	if f == nil {
		return nil
	}
	h := &resource.HeaderRewrite{Remove: f.Remove}
	for _, s := range f.Set {
		if h.Set == nil {
			h.Set = map[string]string{}
		}
		h.Set[string(s.Name)] = s.Value
	}
	for _, a := range f.Add {
		if h.Add == nil {
			h.Add = map[string]string{}
		}
		h.Add[string(a.Name)] = a.Value
	}
	return h
}

// mirror converts a RequestMirror filter.
func (r *route) mirror(at string, f *gwapiv1.HTTPRequestMirrorFilter, services Services, rule *resource.RouteRule) {
	if f == nil {
		return
	}
	if rule.Mirror != nil {
		r.unsupportedf("%s: a second RequestMirror: Trellis mirrors to one service per rule", at)
		return
	}
	svc := r.service(at+".requestMirror.backendRef", f.BackendRef, services)
	if svc == "" {
		return
	}
	m := &resource.RouteMirror{Service: svc}
	switch {
	case f.Percent != nil:
		p := float64(*f.Percent)
		m.Percent = &p
	case f.Fraction != nil:
		d := int32(100)
		if f.Fraction.Denominator != nil {
			d = *f.Fraction.Denominator
		}
		if d > 0 {
			p := 100 * float64(f.Fraction.Numerator) / float64(d)
			m.Percent = &p
		}
	}
	rule.Mirror = m
}

// rewrite adds a header modifier to the rule's request or response.
func rewrite(rule *resource.RouteRule, request, response *gwapiv1.HTTPHeaderFilter) {
	if request == nil && response == nil {
		return
	}
	if rule.Headers == nil {
		rule.Headers = &resource.RouteHeaders{}
	}
	if h := headers(request); h != nil {
		rule.Headers.Request = h
	}
	if h := headers(response); h != nil {
		rule.Headers.Response = h
	}
}

// filter maps one rule filter, HTTPRoute's or GRPCRoute's (their filter
// types share names and payloads), onto rule.
func (r *route) filter(at, typ string, req, resp *gwapiv1.HTTPHeaderFilter, mirror *gwapiv1.HTTPRequestMirrorFilter, services Services, rule *resource.RouteRule) {
	switch typ {
	case string(gwapiv1.HTTPRouteFilterRequestHeaderModifier):
		rewrite(rule, req, nil)
	case string(gwapiv1.HTTPRouteFilterResponseHeaderModifier):
		rewrite(rule, nil, resp)
	case string(gwapiv1.HTTPRouteFilterRequestMirror):
		r.mirror(at, mirror, services, rule)
	default:
		r.unsupportedf("%s: filter %s is not supported (Trellis takes RequestHeaderModifier, ResponseHeaderModifier and RequestMirror)", at, typ)
	}
}

// noBackendFilters refuses filters on backend j of the rule at at.
func (r *route) noBackendFilters(at string, j, filters int) {
	if filters > 0 {
		r.unsupportedf("%s.backendRefs[%d].filters: filters on a backend are not supported; put them on the rule", at, j)
	}
}
