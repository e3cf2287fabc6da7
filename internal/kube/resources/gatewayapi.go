package resources

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellismesh/trellis/internal/kube/gatewayapi"
	"github.com/trellismesh/trellis/internal/resource"
)

// The Gateway API's mesh routes and the Services they name.
var (
	HTTPRoutes = schema.GroupVersionResource{Group: gwapiv1.GroupName, Version: "v1", Resource: "httproutes"}
	GRPCRoutes = schema.GroupVersionResource{Group: gwapiv1.GroupName, Version: "v1", Resource: "grpcroutes"}
	services   = schema.GroupVersionResource{Version: "v1", Resource: "services"}
)

// GatewayAPIServed says whether the API server serves HTTPRoutes and
// GRPCRoutes in gateway.networking.k8s.io/v1 (their CRDs are installed).
func GatewayAPIServed(disc discovery.DiscoveryInterface) (bool, error) {
	list, err := disc.ServerResourcesForGroupVersion(HTTPRoutes.GroupVersion().String())
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("resources: discovery of %s: %w", HTTPRoutes.GroupVersion(), err)
	}
	served := 0
	for _, r := range list.APIResources {
		if r.Name == HTTPRoutes.Resource || r.Name == GRPCRoutes.Resource {
			served++
		}
	}
	return served == 2, nil
}

// WatchGatewayAPI adds HTTPRoutes and GRPCRoutes to the source: call it
// before Start, when GatewayAPIServed. A Service's arrival or departure
// judges its namespace's routes again.
func (s *Source) WatchGatewayAPI() {
	s.addKind(HTTPRoutes, true)
	s.addKind(GRPCRoutes, true)
	s.services = s.factory.ForResource(services).Informer()
	changed := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		for plural, ki := range s.kinds {
			if !ki.gateway {
				continue
			}
			for _, name := range ki.informer.GetStore().ListKeys() {
				if ns, n, _ := cache.SplitMetaNamespaceKey(name); ns == m.GetNamespace() {
					s.queue.Add(key{plural, ns, n})
				}
			}
		}
	}
	_, _ = s.services.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: changed, DeleteFunc: changed})
}

func (s *Source) serviceExists(namespace, name string) bool {
	_, ok, _ := s.services.GetStore().GetByKey(namespace + "/" + name)
	return ok
}

// judgeRoute converts a Gateway API route, keeps the Routes made of it
// and writes its status.parents.
func (s *Source) judgeRoute(ctx context.Context, k key, ki kindInfo, u *unstructured.Unstructured) error {
	var res gatewayapi.Result
	switch k.resource {
	case HTTPRoutes.Resource:
		var hr gwapiv1.HTTPRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &hr); err != nil {
			return fmt.Errorf("resources: %s: %w", k, err)
		}
		res = gatewayapi.HTTPRoute(&hr, s.serviceExists)
		gatewayapi.MarkConflicts(&res, func(svc string) string { return s.grpcRouteOf(k.namespace, svc) })
	default:
		var gr gwapiv1.GRPCRoute
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &gr); err != nil {
			return fmt.Errorf("resources: %s: %w", k, err)
		}
		res = gatewayapi.GRPCRoute(&gr, s.serviceExists)
	}
	for i := range res.Routes {
		m := &res.Routes[i].Metadata
		m.ResourceVersion, m.Generation = u.GetResourceVersion(), u.GetGeneration()
		if ts := u.GetCreationTimestamp(); !ts.IsZero() {
			m.CreationTimestamp = &ts.Time
		}
	}
	s.setRoutes(k, res.Routes)
	if s.statusGated.Load() && !s.leading.Load() {
		return nil // the Lease holder writes status
	}
	return s.writeParents(ctx, ki.gvr, u, res.Parents)
}

// grpcRouteOf names a GRPCRoute of namespace ns with a Route for the
// Service svc, "" when none.
func (s *Source) grpcRouteOf(ns, svc string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, objs := range s.routes {
		if k.resource != GRPCRoutes.Resource || k.namespace != ns {
			continue
		}
		for _, o := range objs {
			var spec struct{ Service string }
			if json.Unmarshal(o.Spec, &spec) == nil && spec.Service == svc {
				return "GRPCRoute " + ns + "/" + k.name
			}
		}
	}
	return ""
}

// setRoutes replaces the Routes made of the route k.
func (s *Source) setRoutes(k key, objs []resource.Object) {
	s.mu.Lock()
	prev, had := s.routes[k]
	if !had && len(objs) == 0 {
		s.mu.Unlock()
		return
	}
	same := len(prev) == len(objs)
	for i := 0; same && i < len(objs); i++ {
		same = prev[i].Metadata.Name == objs[i].Metadata.Name && string(prev[i].Spec) == string(objs[i].Spec)
	}
	if len(objs) == 0 {
		delete(s.routes, k)
	} else {
		s.routes[k] = objs
	}
	if same {
		s.mu.Unlock()
		return
	}
	s.gen.Add(1)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	if k.resource == GRPCRoutes.Resource {
		// Their HTTPRoutes' Conflicted conditions (MarkConflicts).
		if ki, ok := s.kinds[HTTPRoutes.Resource]; ok {
			for _, name := range ki.informer.GetStore().ListKeys() {
				if ns, n, _ := cache.SplitMetaNamespaceKey(name); ns == k.namespace {
					s.queue.Add(key{HTTPRoutes.Resource, ns, n})
				}
			}
		}
	}
}

// writeParents sets Trellis's entries of status.parents, keeping other
// controllers' entries and each condition's lastTransitionTime while its
// status stays; it writes only a change.
func (s *Source) writeParents(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured, ours []gwapiv1.RouteParentStatus) error {
	var cur []gwapiv1.RouteParentStatus
	if raw, ok, _ := unstructured.NestedSlice(u.Object, "status", "parents"); ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &cur)
	}
	var next []gwapiv1.RouteParentStatus
	for _, p := range cur {
		if p.ControllerName != gatewayapi.ControllerName {
			next = append(next, p)
		}
	}
	for _, p := range ours {
		i := slices.IndexFunc(cur, func(c gwapiv1.RouteParentStatus) bool {
			return c.ControllerName == gatewayapi.ControllerName && equality.Semantic.DeepEqual(c.ParentRef, p.ParentRef)
		})
		var conds []metav1.Condition
		if i >= 0 {
			conds = slices.Clone(cur[i].Conditions)
		}
		for _, c := range p.Conditions {
			meta.SetStatusCondition(&conds, c)
		}
		p.Conditions = conds
		next = append(next, p)
	}
	if equality.Semantic.DeepEqual(cur, next) || (len(cur) == 0 && len(next) == 0) {
		return nil
	}
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	var list []any
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	out := u.DeepCopy()
	if list == nil {
		list = []any{}
	}
	if err := unstructured.SetNestedSlice(out.Object, list, "status", "parents"); err != nil {
		return err
	}
	if _, err := s.dyn.Resource(gvr).Namespace(u.GetNamespace()).UpdateStatus(ctx, out, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("resources: status of %s %s/%s: %w", gvr.Resource, u.GetNamespace(), u.GetName(), err)
	}
	return nil
}
