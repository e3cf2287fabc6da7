package controlplane

import (
	"fmt"
	"net/http"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/linediff"
)

// handleGetProxy answers GET /api/v1/proxies/{instance}: the proxy's
// ProxyInfo, its desired and last acknowledged configs rendered as JSON,
// and a line diff from the acknowledged to the desired one.
func (s *Server) handleGetProxy(w http.ResponseWriter, r *http.Request) {
	instance := r.PathValue("instance")
	info, desired, acked, ok := s.push.reg.Proxy(instance)
	if ok && !visible(r, info.Namespace) {
		// A namespaced token learns nothing of proxies elsewhere.
		ok = false
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no proxy instance %q is registered (it may have left after its grace period); `trellis status` lists them", instance))
		return
	}
	out := adminapi.ProxyStatus{ProxyInfo: info}
	var err error
	if desired != nil {
		if out.DesiredConfig, err = snapshot.Render(desired); err != nil {
			s.log.Error("admin api: render desired snapshot", "instance", instance, "err", err)
			writeError(w, http.StatusInternalServerError, err)
			return
		}
	}
	if acked != nil {
		if out.AckedConfig, err = snapshot.Render(acked); err != nil {
			s.log.Error("admin api: render acknowledged snapshot", "instance", instance, "err", err)
			writeError(w, http.StatusInternalServerError, err)
			return
		}
	}
	switch {
	case desired == nil:
		out.Note = "no snapshot has been sent to this proxy by this control plane"
	case info.Acked == nil:
		out.Note = "the proxy has not acknowledged any snapshot yet"
	case acked == nil:
		out.Note = fmt.Sprintf("the content of acknowledged version %s is not known to this control plane (acknowledged before it started, or never sent by it)", info.Acked.Version)
	case acked.GetHash() == desired.GetHash():
		// Same content (a re-sent version renders other version lines only).
	default:
		out.Diff = linediff.Diff(
			fmt.Sprintf("acked (version %s, hash %s)", acked.GetVersion(), shortHash(acked.GetHash())), string(out.AckedConfig),
			fmt.Sprintf("desired (version %s, hash %s)", desired.GetVersion(), shortHash(desired.GetHash())), string(out.DesiredConfig))
	}
	writeJSON(w, http.StatusOK, out)
}
