package gatewayapi_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/kube/gatewayapi"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// services exist in namespace shop only.
func services(ns, name string) bool {
	return ns == "shop" && map[string]bool{"catalog": true, "catalog-v1": true, "catalog-v2": true, "audit": true}[name]
}

func serviceParent(name string) gwapiv1.ParentReference {
	return gwapiv1.ParentReference{Group: new(gwapiv1.Group("")), Kind: new(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(name)}
}

func backend(name string, weight int32) gwapiv1.HTTPBackendRef {
	return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(name), Port: new(gwapiv1.PortNumber(8080))},
		Weight:                 new(weight),
	}}
}

func httpRoute(rules ...gwapiv1.HTTPRouteRule) *gwapiv1.HTTPRoute {
	return &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "split", Namespace: "shop", Generation: 3},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("catalog")}},
			Rules:           rules,
		},
	}
}

func abort500() *resource.RouteFault {
	return &resource.RouteFault{Abort: &resource.FaultAbort{Status: 500, Percent: 100}}
}

func TestHTTPRoute(t *testing.T) {
	split := []resource.RouteBackend{{Service: "catalog-v1", Weight: new(90)}, {Service: "catalog-v2", Weight: new(10)}}
	tests := []struct {
		name string
		in   *gwapiv1.HTTPRoute
		// want: the Route's rules; nil when no Route is made.
		want                       []resource.RouteRule
		accepted, resolved, reason string // the reasons of Accepted and ResolvedRefs; reason: a message part
	}{
		{
			name:     "90/10 split",
			in:       httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 90), backend("catalog-v2", 10)}}),
			want:     []resource.RouteRule{{Backends: split}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonResolvedRefs,
		},
		{
			name: "matches, in the Gateway API's precedence",
			in: httpRoute(
				gwapiv1.HTTPRouteRule{
					Matches: []gwapiv1.HTTPRouteMatch{
						{Path: &gwapiv1.HTTPPathMatch{Type: new(gwapiv1.PathMatchPathPrefix), Value: new("/items/")}},
						{Path: &gwapiv1.HTTPPathMatch{Type: new(gwapiv1.PathMatchRegularExpression), Value: new("/v[0-9]+/.*")}},
					},
					BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 1)},
				},
				gwapiv1.HTTPRouteRule{
					Matches: []gwapiv1.HTTPRouteMatch{{
						Path:    &gwapiv1.HTTPPathMatch{Type: new(gwapiv1.PathMatchExact), Value: new("/items/special")},
						Method:  new(gwapiv1.HTTPMethodPost),
						Headers: []gwapiv1.HTTPHeaderMatch{{Name: "x-canary", Value: "yes"}, {Name: "X-Canary", Value: "no"}},
					}},
					BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v2", 1)},
				},
			),
			want: []resource.RouteRule{
				{Matches: []resource.RouteMatch{{Path: &resource.PathMatch{Exact: "/items/special"}, Method: "POST", Headers: map[string]string{"x-canary": "yes"}}},
					Backends: []resource.RouteBackend{{Service: "catalog-v2", Weight: new(1)}}},
				{Matches: []resource.RouteMatch{{Path: &resource.PathMatch{Prefix: "/items"}}}, Backends: []resource.RouteBackend{{Service: "catalog-v1", Weight: new(1)}}},
				{Matches: []resource.RouteMatch{{Path: &resource.PathMatch{Regex: "/v[0-9]+/.*"}}}, Backends: []resource.RouteBackend{{Service: "catalog-v1", Weight: new(1)}}},
			},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonResolvedRefs,
		},
		{
			name: "header modifiers and a mirror",
			in: httpRoute(gwapiv1.HTTPRouteRule{
				Filters: []gwapiv1.HTTPRouteFilter{
					{Type: gwapiv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwapiv1.HTTPHeaderFilter{
						Set: []gwapiv1.HTTPHeader{{Name: "x-route", Value: "gamma"}}, Add: []gwapiv1.HTTPHeader{{Name: "x-hop", Value: "1"}}, Remove: []string{"x-debug"}}},
					{Type: gwapiv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gwapiv1.HTTPHeaderFilter{
						Set: []gwapiv1.HTTPHeader{{Name: "x-served-by", Value: "trellis"}}}},
					{Type: gwapiv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwapiv1.HTTPRequestMirrorFilter{
						BackendRef: gwapiv1.BackendObjectReference{Name: "audit", Port: new(gwapiv1.PortNumber(80))}, Percent: new(int32(25))}},
				},
				BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 90), backend("catalog-v2", 10)},
			}),
			want: []resource.RouteRule{{
				Backends: split,
				Headers: &resource.RouteHeaders{
					Request:  &resource.HeaderRewrite{Set: map[string]string{"x-route": "gamma"}, Add: map[string]string{"x-hop": "1"}, Remove: []string{"x-debug"}},
					Response: &resource.HeaderRewrite{Set: map[string]string{"x-served-by": "trellis"}},
				},
				Mirror: &resource.RouteMirror{Service: "audit", Percent: new(25.0)},
			}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonResolvedRefs,
		},
		{
			name: "URLRewrite is not supported",
			in: httpRoute(gwapiv1.HTTPRouteRule{
				Filters:     []gwapiv1.HTTPRouteFilter{{Type: gwapiv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwapiv1.HTTPURLRewriteFilter{Hostname: new(gwapiv1.PreciseHostname("x"))}}},
				BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 1)},
			}),
			accepted: gatewayapi.ReasonUnsupportedValue, resolved: gatewayapi.ReasonResolvedRefs, reason: "spec.rules[0].filters[0]: filter URLRewrite is not supported",
		},
		{
			name: "timeouts are not supported",
			in: httpRoute(gwapiv1.HTTPRouteRule{
				Timeouts:    &gwapiv1.HTTPRouteTimeouts{Request: new(gwapiv1.Duration("5s"))},
				BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 1)},
			}),
			accepted: gatewayapi.ReasonUnsupportedValue, resolved: gatewayapi.ReasonResolvedRefs, reason: "spec.rules[0].timeouts",
		},
		{
			name: "a missing backend: its share answers 500",
			in:   httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 90), backend("catalog-v3", 10)}}),
			want: []resource.RouteRule{{Backends: []resource.RouteBackend{{Service: "catalog-v1", Weight: new(90)}},
				Fault: &resource.RouteFault{Abort: &resource.FaultAbort{Status: 500, Percent: 10}}}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonBackendNotFound, reason: "Service shop/catalog-v3 not found",
		},
		{
			name:     "no backend left answers 500",
			in:       httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v3", 1)}}),
			want:     []resource.RouteRule{{Fault: abort500()}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonBackendNotFound,
		},
		{
			name: "a backend in another namespace",
			in: httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
				BackendObjectReference: gwapiv1.BackendObjectReference{Name: "catalog", Namespace: new(gwapiv1.Namespace("other")), Port: new(gwapiv1.PortNumber(80))}}}}}),
			want:     []resource.RouteRule{{Fault: abort500()}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonRefNotPermitted, reason: "ReferenceGrant is not supported",
		},
		{
			name: "a backend of another kind",
			in: httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
				BackendObjectReference: gwapiv1.BackendObjectReference{Group: new(gwapiv1.Group("example.com")), Kind: new(gwapiv1.Kind("Bucket")), Name: "b"}}}}}),
			want:     []resource.RouteRule{{Fault: abort500()}},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonInvalidKind,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := gatewayapi.HTTPRoute(tt.in, services)
			checkResult(t, res, "httproute.split.catalog", tt.want, tt.accepted, tt.resolved, tt.reason)
		})
	}
}

func checkResult(t *testing.T, res gatewayapi.Result, name string, want []resource.RouteRule, accepted, resolved, reason string) {
	t.Helper()
	if len(res.Parents) != 1 {
		t.Fatalf("%d parent statuses, want 1", len(res.Parents))
	}
	p := res.Parents[0]
	if p.ControllerName != gatewayapi.ControllerName || p.ParentRef.Name != "catalog" {
		t.Errorf("parent status for %s by %s, want catalog by %s", p.ParentRef.Name, p.ControllerName, gatewayapi.ControllerName)
	}
	conds := map[string]metav1.Condition{}
	for _, c := range p.Conditions {
		conds[c.Type] = c
	}
	a, r := conds[gatewayapi.ConditionAccepted], conds[gatewayapi.ConditionResolvedRefs]
	if a.Reason != accepted || r.Reason != resolved {
		t.Errorf("Accepted %s, ResolvedRefs %s; want %s, %s (%q, %q)", a.Reason, r.Reason, accepted, resolved, a.Message, r.Message)
	}
	if (a.Status == metav1.ConditionTrue) != (accepted == gatewayapi.ReasonAccepted) || (r.Status == metav1.ConditionTrue) != (resolved == gatewayapi.ReasonResolvedRefs) {
		t.Errorf("statuses Accepted=%s ResolvedRefs=%s do not agree with their reasons", a.Status, r.Status)
	}
	if a.ObservedGeneration != 3 || r.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d, %d, want 3", a.ObservedGeneration, r.ObservedGeneration)
	}
	if reason != "" && !strings.Contains(a.Message+" "+r.Message, reason) {
		t.Errorf("messages %q, %q, want one containing %q", a.Message, r.Message, reason)
	}
	if want == nil {
		if len(res.Routes) != 0 {
			t.Errorf("routes %s, want none", res.Routes[0].Spec)
		}
		return
	}
	if len(res.Routes) != 1 {
		t.Fatalf("%d routes, want 1", len(res.Routes))
	}
	o := res.Routes[0]
	if o.Kind != resource.KindRoute || o.Metadata.Name != name || o.Metadata.Namespace != "shop" {
		t.Errorf("route %s %s/%s, want Route shop/%s", o.Kind, o.Metadata.Namespace, o.Metadata.Name, name)
	}
	if err := resource.Validate(&o); err != nil {
		t.Errorf("the route does not validate: %v", err)
	}
	var got resource.RouteSpec
	if err := json.Unmarshal(o.Spec, &got); err != nil {
		t.Fatal(err)
	}
	if got.Service != "catalog" {
		t.Errorf("service %q, want catalog", got.Service)
	}
	if !reflect.DeepEqual(got.Rules, want) {
		g, _ := json.Marshal(got.Rules)
		w, _ := json.Marshal(want)
		t.Errorf("rules\n got %s\nwant %s", g, w)
	}
}

func TestParents(t *testing.T) {
	gateway := gwapiv1.ParentReference{Name: "ingress"}
	tests := []struct {
		name    string
		parents []gwapiv1.ParentReference
		// want: "name=reason" for each parent status
		want   []string
		routes int
	}{
		{name: "a Gateway is another controller's", parents: []gwapiv1.ParentReference{gateway}},
		{name: "a Gateway and a Service", parents: []gwapiv1.ParentReference{gateway, serviceParent("catalog")}, want: []string{"catalog=Accepted"}, routes: 1},
		{name: "two Services", parents: []gwapiv1.ParentReference{serviceParent("catalog"), serviceParent("audit")}, want: []string{"catalog=Accepted", "audit=Accepted"}, routes: 2},
		{name: "a missing Service", parents: []gwapiv1.ParentReference{serviceParent("nope")}, want: []string{"nope=NoMatchingParent"}},
		{name: "another kind", parents: []gwapiv1.ParentReference{{Group: new(gwapiv1.Group("multicluster.x-k8s.io")), Kind: new(gwapiv1.Kind("ServiceImport")), Name: "catalog"}},
			want: []string{"catalog=UnsupportedValue"}},
		{name: "a consumer route", parents: []gwapiv1.ParentReference{{Group: new(gwapiv1.Group("")), Kind: new(gwapiv1.Kind("Service")), Namespace: new(gwapiv1.Namespace("other")), Name: "catalog"}},
			want: []string{"catalog=UnsupportedValue"}},
		{name: "a port", parents: []gwapiv1.ParentReference{{Group: new(gwapiv1.Group("")), Kind: new(gwapiv1.Kind("Service")), Name: "catalog", Port: new(gwapiv1.PortNumber(80))}},
			want: []string{"catalog=UnsupportedValue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 1)}})
			in.Spec.ParentRefs = tt.parents
			res := gatewayapi.HTTPRoute(in, services)
			var got []string
			for _, p := range res.Parents {
				for _, c := range p.Conditions {
					if c.Type == gatewayapi.ConditionAccepted {
						got = append(got, string(p.ParentRef.Name)+"="+c.Reason)
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") || len(res.Routes) != tt.routes {
				t.Errorf("parents %v and %d routes, want %v and %d", got, len(res.Routes), tt.want, tt.routes)
			}
		})
	}
}

func TestGRPCRoute(t *testing.T) {
	route := func(rules ...gwapiv1.GRPCRouteRule) *gwapiv1.GRPCRoute {
		return &gwapiv1.GRPCRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "split", Namespace: "shop", Generation: 3},
			Spec: gwapiv1.GRPCRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("catalog")}},
				Rules:           rules,
			},
		}
	}
	grpcBackend := func(name string, w int32) gwapiv1.GRPCBackendRef {
		return gwapiv1.GRPCBackendRef{BackendRef: backend(name, w).BackendRef}
	}
	tests := []struct {
		name                       string
		in                         *gwapiv1.GRPCRoute
		want                       []resource.RouteRule
		accepted, resolved, reason string
	}{
		{
			name: "method matches, the longest service first",
			in: route(
				gwapiv1.GRPCRouteRule{
					Matches:     []gwapiv1.GRPCRouteMatch{{Method: &gwapiv1.GRPCMethodMatch{Service: new("shop.Catalog")}}},
					BackendRefs: []gwapiv1.GRPCBackendRef{grpcBackend("catalog-v1", 1)},
				},
				gwapiv1.GRPCRouteRule{
					Matches: []gwapiv1.GRPCRouteMatch{{
						Method:  &gwapiv1.GRPCMethodMatch{Type: new(gwapiv1.GRPCMethodMatchExact), Service: new("shop.CatalogAdmin"), Method: new("Reindex")},
						Headers: []gwapiv1.GRPCHeaderMatch{{Name: "x-tenant", Value: "a"}},
					}},
					BackendRefs: []gwapiv1.GRPCBackendRef{grpcBackend("catalog-v1", 90), grpcBackend("catalog-v2", 10)},
				},
			),
			want: []resource.RouteRule{
				{Matches: []resource.RouteMatch{{GRPC: &resource.GRPCMatch{Service: "shop.CatalogAdmin", Method: "Reindex"}, Headers: map[string]string{"x-tenant": "a"}}},
					Backends: []resource.RouteBackend{{Service: "catalog-v1", Weight: new(90)}, {Service: "catalog-v2", Weight: new(10)}}},
				{Matches: []resource.RouteMatch{{GRPC: &resource.GRPCMatch{Service: "shop.Catalog"}}}, Backends: []resource.RouteBackend{{Service: "catalog-v1", Weight: new(1)}}},
			},
			accepted: gatewayapi.ReasonAccepted, resolved: gatewayapi.ReasonResolvedRefs,
		},
		{
			name: "a regular expression method match is not supported",
			in: route(gwapiv1.GRPCRouteRule{
				Matches:     []gwapiv1.GRPCRouteMatch{{Method: &gwapiv1.GRPCMethodMatch{Type: new(gwapiv1.GRPCMethodMatchRegularExpression), Service: new("shop\\..*")}}},
				BackendRefs: []gwapiv1.GRPCBackendRef{grpcBackend("catalog-v1", 1)},
			}),
			accepted: gatewayapi.ReasonUnsupportedValue, resolved: gatewayapi.ReasonResolvedRefs, reason: "method.type: RegularExpression",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := gatewayapi.GRPCRoute(tt.in, services)
			checkResult(t, res, "grpcroute.split.catalog", tt.want, tt.accepted, tt.resolved, tt.reason)
		})
	}
}

// Two HTTPRoutes of one Service, as the proxies compile their Routes:
// merged in the Gateway API's precedence (the longest prefix, then the
// older route), and a 404 for what neither takes.
func TestSeveralRoutesOfOneService(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prefix := func(p, to string) gwapiv1.HTTPRouteRule {
		return gwapiv1.HTTPRouteRule{
			Matches:     []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: new(gwapiv1.PathMatchPathPrefix), Value: new(p)}}},
			BackendRefs: []gwapiv1.HTTPBackendRef{backend(to, 1)},
		}
	}
	items := httpRoute(prefix("/items", "catalog-v1"))
	items.Name, items.CreationTimestamp = "items", metav1.NewTime(t0.Add(time.Minute))
	cart := httpRoute(prefix("/items", "audit"), prefix("/items/cart", "catalog-v2"))
	cart.Name, cart.CreationTimestamp = "cart", metav1.NewTime(t0)
	var ins []meshconfig.RouteInput
	for _, hr := range []*gwapiv1.HTTPRoute{items, cart} {
		res := gatewayapi.HTTPRoute(hr, services)
		if len(res.Routes) != 1 {
			t.Fatalf("%s: %d Routes, want 1", hr.Name, len(res.Routes))
		}
		o := res.Routes[0]
		o.Metadata.CreationTimestamp = &hr.CreationTimestamp.Time // as the resource source does
		if o.Metadata.Labels[meshconfig.LabelGatewayAPIKind] != "HTTPRoute" {
			t.Errorf("%s: labels %v, want %s: HTTPRoute", o.Metadata.Name, o.Metadata.Labels, meshconfig.LabelGatewayAPIKind)
		}
		in, err := meshconfig.RouteInputOf(&o)
		if err != nil {
			t.Fatal(err)
		}
		if u := in.Spec.Unmatched; u == nil || u.Status != 404 {
			t.Errorf("%s: spec.unmatched %+v, want {status: 404}", o.Metadata.Name, u)
		}
		ins = append(ins, in)
	}
	r := meshconfig.CompileRoutes(ins)["catalog.shop"]
	for _, tc := range []struct{ path, want string }{
		{"/items/cart/1", "catalog-v2.shop"},
		{"/items/1", "audit.shop"},
		{"/items", "audit.shop"},
		{"/cart", "404"},
	} {
		rule := r.Match("GET", tc.path, http.Header{})
		got := "the service"
		switch {
		case rule == nil:
		case rule.Index < 0:
			got = strconv.Itoa(rule.Abort.Status)
		default:
			got = rule.Pick()
		}
		if got != tc.want {
			t.Errorf("GET %s: got %s, want %s", tc.path, got, tc.want)
		}
	}
}

// An HTTPRoute whose Service also has a GRPCRoute is not accepted there
// (GEP-1426: GRPCRoutes take precedence); its other parents are.
func TestMarkConflicts(t *testing.T) {
	hr := httpRoute(gwapiv1.HTTPRouteRule{BackendRefs: []gwapiv1.HTTPBackendRef{backend("catalog-v1", 1)}})
	hr.Spec.ParentRefs = append(hr.Spec.ParentRefs, serviceParent("audit"))
	res := gatewayapi.HTTPRoute(hr, services)
	gatewayapi.MarkConflicts(&res, func(svc string) string {
		if svc == "catalog" {
			return "GRPCRoute shop/rpc"
		}
		return ""
	})
	if len(res.Routes) != 2 || len(res.Parents) != 2 {
		t.Fatalf("%d Routes, %d parents; want 2 and 2", len(res.Routes), len(res.Parents))
	}
	for i, want := range []string{gatewayapi.ReasonConflicted, gatewayapi.ReasonAccepted} {
		c := res.Parents[i].Conditions[0]
		if c.Type != gatewayapi.ConditionAccepted || c.Reason != want || (want == gatewayapi.ReasonConflicted) != (c.Status == metav1.ConditionFalse) {
			t.Errorf("parent %s: %+v, want Accepted reason %s", res.Parents[i].ParentRef.Name, c, want)
		}
	}
	if msg := res.Parents[0].Conditions[0].Message; !strings.Contains(msg, "GRPCRoute shop/rpc") || !strings.Contains(msg, "GEP-1426") {
		t.Errorf("message %q: want the GRPCRoute named and GEP-1426", msg)
	}
}
