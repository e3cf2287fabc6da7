package controlplane

import (
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
)

// Root rotation runs in meshca.Rollout (the steps: internal/meshca,
// rollout.go); the server gives it the registry's certificate reports,
// follows its changes and logs and audits them.

// proxyCerts is every registered proxy's last certificate report.
func (s *Server) proxyCerts() []meshca.ProxyCert {
	states := s.push.reg.CertStates()
	out := make([]meshca.ProxyCert, len(states))
	for i, c := range states {
		out[i] = meshca.ProxyCert(c)
	}
	return out
}

// rotateCA starts a root rotation and pushes its result; r is the admin
// request, for the audit event.
func (s *Server) rotateCA(r *http.Request) (meshca.Change, error) {
	return s.rollout.Rotate(func(ch meshca.Change) {
		added := s.ca.ActiveRoot()
		s.log.Info("ca rotated: signing with a new intermediate; proxies renew now", "new_root", identity.CertID(added),
			"issuer", s.ca.IssuerID(), "previous_issuer", ch.PrevIssuer, "roots", len(s.ca.Roots()))
		s.audit.record(adminEvent(r, "ca.rotated", map[string]string{
			"new_root": identity.CertID(added), "issuer": s.ca.IssuerID(), "previous_issuer": ch.PrevIssuer,
			"roots": strings.Join(s.ca.RootIDs(), ","), "previous_roots": strings.Join(ch.PrevRoots, ","),
		}))
	})
}

// retireOldCA drops every root but the active one, unless a registered
// proxy still depends on another.
func (s *Server) retireOldCA(r *http.Request) (meshca.Change, error) {
	return s.rollout.RetireOld(func(ch meshca.Change) {
		ids := make([]string, len(ch.Retired))
		for i, c := range ch.Retired {
			ids[i] = c.ID
		}
		s.log.Info("ca: old roots retired", "retired", ids, "root", identity.CertID(s.ca.ActiveRoot()))
		s.audit.record(adminEvent(r, "ca.retired", map[string]string{
			"retired_roots": strings.Join(ids, ","), "root": identity.CertID(s.ca.ActiveRoot()), "issuer": s.ca.IssuerID(),
		}))
	})
}

// caChanged follows a change of the CA's issuer or bundle: snapshots
// carry the new bundle and issuer, the serving certificate comes from the
// current intermediate.
func (s *Server) caChanged() {
	s.serving.Invalidate()
	s.metrics.intermediateExp.Set(float64(s.ca.IntermediateExpiry().Unix()))
	s.push.kick()
}
