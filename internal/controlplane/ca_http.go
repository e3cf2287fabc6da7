package controlplane

import (
	"errors"
	"net/http"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/meshca"
)

// handleCAStatus answers GET /api/v1/ca (trellis ca status).
func (s *Server) handleCAStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.rollout.Status())
}

// handleCARotate answers POST /api/v1/ca/rotate (trellis ca rotate).
func (s *Server) handleCARotate(w http.ResponseWriter, r *http.Request) {
	ch, err := s.rotateCA(r)
	s.writeCAChange(w, ch, err)
}

// handleCARetireOld answers POST /api/v1/ca/retire-old (trellis ca retire-old).
func (s *Server) handleCARetireOld(w http.ResponseWriter, r *http.Request) {
	ch, err := s.retireOldCA(r)
	s.writeCAChange(w, ch, err)
}

func (s *Server) writeCAChange(w http.ResponseWriter, ch meshca.Change, err error) {
	switch {
	case errors.Is(err, meshca.ErrExternalCA), errors.Is(err, meshca.ErrNotRotating), errors.Is(err, meshca.ErrRetireRefused),
		errors.Is(err, adminapi.ErrConflict):
		writeError(w, http.StatusConflict, err)
	case err != nil:
		s.log.Error("ca lifecycle", "err", err)
		writeError(w, http.StatusInternalServerError, err)
	default:
		writeJSON(w, http.StatusOK, adminapi.CAChangeResponse{Added: ch.Added, Retired: ch.Retired, Status: ch.Status})
	}
}
