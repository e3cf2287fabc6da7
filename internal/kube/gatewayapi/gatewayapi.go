// Package gatewayapi maps the Gateway API's mesh routes (GAMMA) onto
// Trellis Routes: an HTTPRoute or GRPCRoute (gateway.networking.k8s.io/v1)
// whose parentRefs name a core Service becomes one Route per such Service,
// and each such parent gets the Gateway API's Accepted and ResolvedRefs
// conditions under the controller name trellis.dev/mesh (docs/traffic.md,
// "Gateway API (GAMMA)").
//
// It is pure conversion over the sigs.k8s.io/gateway-api types; Kubernetes
// mode's resource source (internal/kube/resources) reads the routes and
// writes their status. Only Kubernetes mode imports it: the sidecar build
// (-tags trellis_nokube) leaves it out.
package gatewayapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// ControllerName is what Trellis writes in status.parents[].controllerName.
const ControllerName gwapiv1.GatewayController = "trellis.dev/mesh"

// Condition types and reasons, the Gateway API's own.
const (
	ConditionAccepted     = string(gwapiv1.RouteConditionAccepted)
	ConditionResolvedRefs = string(gwapiv1.RouteConditionResolvedRefs)

	ReasonAccepted         = string(gwapiv1.RouteReasonAccepted)
	ReasonUnsupportedValue = string(gwapiv1.RouteReasonUnsupportedValue)
	ReasonNoMatchingParent = string(gwapiv1.RouteReasonNoMatchingParent)
	ReasonResolvedRefs     = string(gwapiv1.RouteReasonResolvedRefs)
	ReasonBackendNotFound  = string(gwapiv1.RouteReasonBackendNotFound)
	ReasonInvalidKind      = string(gwapiv1.RouteReasonInvalidKind)
	ReasonRefNotPermitted  = string(gwapiv1.RouteReasonRefNotPermitted)
	// ReasonConflicted is GEP-1426's reason for a route of one type
	// whose Service also has a route of a type that takes precedence
	// (not a constant of the v1.6.3 API types).
	ReasonConflicted = "Conflicted"
)

// Services says whether the Service namespace/name exists. The resource
// source answers from its informer's cache.
type Services func(namespace, name string) bool

// Result is what one route maps to.
type Result struct {
	// Routes holds one Trellis Route per accepted Service parent, named
	// "httproute.NAME.SERVICE" or "grpcroute.NAME.SERVICE" in the route's
	// namespace, valid for resource.Validate, labelled with
	// meshconfig.LabelGatewayAPIKind (the proxies merge the Routes of
	// one Service so labelled) and answering 404 to the requests no rule
	// takes.
	Routes []resource.Object
	// Parents holds the status of every parentRef Trellis answers for:
	// Service parents and parents of kinds no other controller takes.
	// Gateway parents are left to their gateway's controller.
	Parents []gwapiv1.RouteParentStatus
}

// route is an HTTPRoute or GRPCRoute on its way to Trellis Routes.
type route struct {
	kind, namespace, name string
	generation            int64
	parents               []gwapiv1.ParentReference
	rules                 []resource.RouteRule
	// unsupported: fields Trellis cannot honour; the route is not
	// accepted (UnsupportedValue).
	unsupported []string
	// unresolved: backend references dropped (ResolvedRefs=False); the
	// first reason is the condition's.
	unresolvedReason string
	unresolved       []string
}

func (r *route) unsupportedf(format string, args ...any) {
	r.unsupported = append(r.unsupported, fmt.Sprintf(format, args...))
}

func (r *route) unresolvedf(reason, format string, args ...any) {
	if r.unresolvedReason == "" {
		r.unresolvedReason = reason
	}
	r.unresolved = append(r.unresolved, fmt.Sprintf(format, args...))
}

// result judges every parentRef and makes the Routes.
func (r *route) result(services Services) Result {
	var out Result
	done := map[string]bool{}
	for i, p := range r.parents {
		group, kind := "gateway.networking.k8s.io", "Gateway"
		if p.Group != nil {
			group = string(*p.Group)
		}
		if p.Kind != nil {
			kind = string(*p.Kind)
		}
		if group == "gateway.networking.k8s.io" && kind == "Gateway" {
			continue // a gateway's controller answers for it
		}
		ns := r.namespace
		if p.Namespace != nil && *p.Namespace != "" {
			ns = string(*p.Namespace)
		}
		at := fmt.Sprintf("spec.parentRefs[%d]", i)
		accepted := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "accepted by the mesh"}
		refuse := func(reason, format string, args ...any) {
			accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, reason, fmt.Sprintf(format, args...)
		}
		switch {
		case group != "" || kind != "Service":
			refuse(ReasonUnsupportedValue, "%s: Trellis takes parents of kind Service (group \"\"), not %s %s", at, kind, groupName(group))
		case ns != r.namespace:
			refuse(ReasonUnsupportedValue, "%s: the Service is in namespace %s: consumer routes (a parent in another namespace) are not supported; put the route in %s", at, ns, ns)
		case p.Port != nil || p.SectionName != nil:
			refuse(ReasonUnsupportedValue, "%s: port and sectionName are not supported: a Trellis route applies to every port of the Service; remove them", at)
		case !services(ns, string(p.Name)):
			refuse(ReasonNoMatchingParent, "%s: Service %s/%s not found", at, ns, p.Name)
		case len(r.unsupported) > 0:
			refuse(ReasonUnsupportedValue, "%s (Trellis routes nothing for this route until they are removed)", strings.Join(r.unsupported, "; "))
		case done[string(p.Name)]:
		default:
			obj, err := r.object(string(p.Name))
			if err != nil {
				refuse(ReasonUnsupportedValue, "%s", err.Error())
				break
			}
			done[string(p.Name)] = true
			out.Routes = append(out.Routes, obj)
		}
		accepted.ObservedGeneration = r.generation
		resolved := metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: ReasonResolvedRefs, Message: "every backend reference resolved", ObservedGeneration: r.generation}
		if len(r.unresolved) > 0 {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, r.unresolvedReason, strings.Join(r.unresolved, "; ")
		}
		out.Parents = append(out.Parents, gwapiv1.RouteParentStatus{
			ParentRef:      p,
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{accepted, resolved},
		})
	}
	return out
}

// MarkConflicts refuses (Accepted=False, Conflicted) the Service parents
// of an HTTPRoute's result that a GRPCRoute also has: one route type per
// Service, and GRPCRoutes take precedence (GEP-1426). grpcRouteOf names
// a GRPCRoute of the route's namespace whose Route is for the Service
// ("" when none). The Routes stay in res: the proxies leave them out
// (meshconfig.CompileRoutes) whatever order the routes are judged in.
func MarkConflicts(res *Result, grpcRouteOf func(service string) string) {
	for i := range res.Parents {
		p := &res.Parents[i]
		ref := p.ParentRef
		if ref.Group == nil || *ref.Group != "" || ref.Kind == nil || *ref.Kind != "Service" {
			continue
		}
		g := grpcRouteOf(string(ref.Name))
		if g == "" {
			continue
		}
		for j := range p.Conditions {
			if c := &p.Conditions[j]; c.Type == ConditionAccepted && c.Status == metav1.ConditionTrue {
				c.Status, c.Reason = metav1.ConditionFalse, ReasonConflicted
				c.Message = fmt.Sprintf("%s also has Service %s as parent: a Service takes one route type, and GRPCRoutes come first (GEP-1426); the mesh applies the GRPCRoute", g, ref.Name)
			}
		}
	}
}

// object is the Trellis Route for the parent Service svc.
func (r *route) object(svc string) (resource.Object, error) {
	// A request no rule takes gets a 404 (gRPC: 12 UNIMPLEMENTED), as
	// the Gateway API asks.
	spec, err := json.Marshal(resource.RouteSpec{Service: svc, Rules: r.rules, Unmatched: &resource.RouteUnmatched{Status: http.StatusNotFound}})
	if err != nil {
		return resource.Object{}, fmt.Errorf("gatewayapi: %w", err)
	}
	o := resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindRoute,
		Metadata: resource.Metadata{
			Name:        strings.ToLower(r.kind) + "." + r.name + "." + svc,
			Namespace:   r.namespace,
			Labels:      map[string]string{meshconfig.LabelGatewayAPIKind: r.kind},
			Annotations: map[string]string{meshconfig.AnnotationFrom: r.kind + " " + r.namespace + "/" + r.name},
		},
		Spec: spec,
	}
	if err := resource.Validate(&o); err != nil {
		return resource.Object{}, fmt.Errorf("the Trellis Route made of it is refused: %w", err)
	}
	return o, nil
}

func groupName(g string) string {
	if g == "" {
		return "(core group)"
	}
	return "of group " + g
}
