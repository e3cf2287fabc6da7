package controlplane

import "net/http"

// statusRoutes adds the proxy status endpoints (trellis status).
func (s *Server) statusRoutes(api *http.ServeMux) {}
