package controlplane

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/meshca"
)

// caRoutes adds the CA lifecycle endpoints (trellis ca rotate|retire-old|status).
func (s *Server) caRoutes(api *http.ServeMux) {
	api.HandleFunc("GET "+adminapi.PathCA, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.rollout.Status())
	})
	api.HandleFunc("POST "+adminapi.PathCARotate, func(w http.ResponseWriter, r *http.Request) {
		if s.refuseSharedCA(w, "rotate") {
			return
		}
		ch, err := s.rotateCA(r)
		s.writeCAChange(w, ch, err)
	})
	api.HandleFunc("POST "+adminapi.PathCARetireOld, func(w http.ResponseWriter, r *http.Request) {
		if s.refuseSharedCA(w, "retire-old") {
			return
		}
		ch, err := s.retireOldCA(r)
		s.writeCAChange(w, ch, err)
	})
}

// refuseSharedCA answers 409 when the CA is shared with other replicas
// (Config.SharedCA): rotation does not reach them yet.
func (s *Server) refuseSharedCA(w http.ResponseWriter, op string) bool {
	if s.cfg.SharedCA == "" {
		return false
	}
	writeError(w, http.StatusConflict, fmt.Errorf("ca %s: not available when the CA is shared by several replicas (%s): a rotation made on one replica would not reach the others or their proxies; docs/kubernetes.md says what to do meanwhile", op, s.cfg.SharedCA))
	return true
}

func (s *Server) writeCAChange(w http.ResponseWriter, ch meshca.Change, err error) {
	switch {
	case errors.Is(err, meshca.ErrExternalCA), errors.Is(err, meshca.ErrNotRotating), errors.Is(err, meshca.ErrRetireRefused):
		writeError(w, http.StatusConflict, err)
	case err != nil:
		s.log.Error("ca lifecycle", "err", err)
		writeError(w, http.StatusInternalServerError, err)
	default:
		writeJSON(w, http.StatusOK, adminapi.CAChangeResponse{Added: ch.Added, Retired: ch.Retired, Status: ch.Status})
	}
}
