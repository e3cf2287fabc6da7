package controlplane

import (
	"fmt"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/resource"
)

// warnUnknownServices adds a warning to the result of every applied Intent
// that calls a service no workload has registered (or, in Kubernetes mode,
// no EndpointSlice names): the Intent is kept, since the service may come
// later, but a typo would otherwise go unnoticed.
func (s *Server) warnUnknownServices(objs []resource.Object, results []adminapi.ApplyResult) {
	known := map[string]bool{}
	loaded := false
	for i := range objs {
		if objs[i].Kind != resource.KindIntent || i >= len(results) {
			continue
		}
		spec, err := resource.IntentSpecOf(&objs[i])
		if err != nil {
			continue
		}
		if !loaded {
			loaded = true
			ws, idle, _ := s.push.reg.View()
			if s.cfg.Workloads != nil {
				if kws, _, _, err := s.cfg.Workloads.Workloads(); err == nil {
					ws, idle = kws, nil
				}
			}
			for _, svc := range serviceInfos(ws, idle, "") {
				known[svc.Name+"."+svc.Namespace] = true
			}
		}
		ns := objs[i].Metadata.Namespace
		if !known[spec.Client.Service+"."+ns] {
			results[i].Warnings = append(results[i].Warnings, fmt.Sprintf("client service %s.%s is not known to the mesh yet (no workload has joined as it); the intent is kept and applies once it does", spec.Client.Service, ns))
		}
		for j, c := range spec.Calls {
			name, cns := resource.IntentTarget(c.Service, ns)
			if !known[name+"."+cns] {
				results[i].Warnings = append(results[i].Warnings, fmt.Sprintf("spec.calls[%d]: service %s.%s is not known to the mesh yet (no workload has joined as it); the intent is kept and its policy applies once it does", j, name, cns))
			}
		}
	}
}
