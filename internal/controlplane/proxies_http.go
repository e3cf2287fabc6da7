package controlplane

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
)

// handleListProxies answers GET /api/v1/proxies[?namespace=NS]: every
// proxy the registry holds with its sync state.
func (s *Server) handleListProxies(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	if !s.listNamespace(w, r, adminauth.StatusRead, ns) {
		return
	}
	items := slices.DeleteFunc(s.push.reg.Proxies(ns), func(p adminapi.ProxyInfo) bool { return !visible(r, p.Namespace) })
	writeJSON(w, http.StatusOK, adminapi.ProxyListResponse{Items: items})
}

// handleListServices answers GET /api/v1/services[?namespace=NS]: the
// services proxies see, counted the way their snapshots list them.
func (s *Server) handleListServices(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	if !s.listNamespace(w, r, adminauth.StatusRead, ns) {
		return
	}
	ws, idle, _ := s.push.reg.View()
	var vipOf map[snapshot.ServiceKey]string
	if s.cfg.Workloads != nil {
		var err error
		if ws, vipOf, _, err = s.cfg.Workloads.Workloads(); err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("read workloads: %w", err))
			return
		}
		idle = nil
	}
	items := slices.DeleteFunc(serviceInfos(ws, idle, ns), func(i adminapi.ServiceInfo) bool { return !visible(r, i.Namespace) })
	for i := range items {
		k := snapshot.ServiceKey{Namespace: items[i].Namespace, Name: items[i].Name}
		if vipOf != nil {
			items[i].VirtualIP = vipOf[k]
		} else {
			items[i].VirtualIP = s.push.vips.Known(k)
		}
	}
	writeJSON(w, http.StatusOK, adminapi.ServiceListResponse{Items: items})
}

// serviceInfos summarizes servicesOf(ws, idle) with instance counts;
// namespace "" means all.
func serviceInfos(ws []snapshot.Workload, idle []snapshot.IdleService, namespace string) []adminapi.ServiceInfo {
	type key struct{ ns, name string }
	instances, connected := map[key]int{}, map[key]int{}
	for _, w := range ws {
		k := key{w.Namespace, w.Service}
		instances[k]++
		if w.Connected {
			connected[k]++
		}
	}
	out := []adminapi.ServiceInfo{}
	for _, svc := range snapshot.ServicesOf(ws, idle) {
		if namespace != "" && svc.GetNamespace() != namespace {
			continue
		}
		k := key{svc.GetNamespace(), svc.GetName()}
		out = append(out, adminapi.ServiceInfo{
			Name:      svc.GetName(),
			Namespace: svc.GetNamespace(),
			Protocol:  svc.GetProtocol(),
			Endpoints: len(svc.GetEndpoints()),
			Instances: instances[k],
			Connected: connected[k],
		})
	}
	return out
}
