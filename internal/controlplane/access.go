package controlplane

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
)

// adminRoute is one admin API endpoint and the permission it needs.
// Every endpoint under /api/ is registered from adminRoutes, and only
// from there, so none exists without a permission.
type adminRoute struct {
	pattern string // http.ServeMux pattern, "METHOD /path"
	perm    adminauth.Permission
	// cluster: the endpoint acts on cluster-scoped things (the CA, the
	// whole graph), so a token limited to namespaces is refused before
	// the handler runs. Otherwise the handler checks or filters by
	// namespace with authorizeIn and visible.
	cluster bool
	handler http.Handler
}

// adminRoutes is the admin API: each endpoint, its permission and its
// handler. docs/admin-access.md shows this table. The web console's
// pages under /ui are not here: they take a cookie session, not a bearer
// token, and have their own table with a permission for each
// (console.Routes, walked by TestConsoleRoutesHavePermissions); the
// admin API calls they make go through these routes.
func (s *Server) adminRoutes() []adminRoute {
	hf := func(f http.HandlerFunc) http.Handler { return f }
	res := adminapi.PathResource + "/{plural}"
	return []adminRoute{
		{"POST " + adminapi.PathApply, adminauth.ResourcesWrite, false, hf(s.handleApply)},
		{"GET " + res, adminauth.ResourcesRead, false, hf(s.handleList)},
		{"GET " + res + "/{name}", adminauth.ResourcesRead, false, hf(s.handleGet)},
		{"GET " + res + "/{namespace}/{name}", adminauth.ResourcesRead, false, hf(s.handleGet)},
		{"DELETE " + res + "/{name}", adminauth.ResourcesWrite, false, hf(s.handleDelete)},
		{"DELETE " + res + "/{namespace}/{name}", adminauth.ResourcesWrite, false, hf(s.handleDelete)},
		{"POST " + adminapi.PathTokens, adminauth.JoinTokensWrite, false, hf(s.handleCreateToken)},
		{"GET " + adminapi.PathTokens, adminauth.JoinTokensRead, false, hf(s.handleListTokens)},
		{"DELETE " + adminapi.PathTokens + "/{id}", adminauth.JoinTokensWrite, false, hf(s.handleRevokeToken)},
		{"GET " + adminapi.PathProxies, adminauth.StatusRead, false, hf(s.handleListProxies)},
		{"GET " + adminapi.PathProxies + "/{instance}", adminauth.StatusRead, false, hf(s.handleGetProxy)},
		{"GET " + adminapi.PathServices, adminauth.StatusRead, false, hf(s.handleListServices)},
		{"GET " + adminapi.PathGraph, adminauth.StatusRead, true, s.graphHandler()},
		{"GET " + adminapi.PathShapes, adminauth.StatusRead, false, s.namespaceQueryRequired(s.shapesHandler())},
		{"GET " + adminapi.PathAlerts, adminauth.StatusRead, true, s.alertsHandler()},
		{"GET " + adminapi.PathAuditVerify, adminauth.AuditRead, true, s.auditVerifyHandler()},
		{"GET " + adminapi.PathAuditEvents, adminauth.AuditRead, true, s.auditEventsHandler()},
		{"GET " + adminapi.PathCA, adminauth.StatusRead, false, hf(s.handleCAStatus)},
		{"POST " + adminapi.PathCARotate, adminauth.CAWrite, true, hf(s.handleCARotate)},
		{"POST " + adminapi.PathCARetireOld, adminauth.CAWrite, true, hf(s.handleCARetireOld)},
		{"POST " + adminapi.PathAdminTokens, adminauth.AdminTokensWrite, false, hf(s.handleCreateAdminToken)},
		{"GET " + adminapi.PathAdminTokens, adminauth.AdminTokensRead, false, hf(s.handleListAdminTokens)},
		{"DELETE " + adminapi.PathAdminTokens + "/{name}", adminauth.AdminTokensWrite, false, hf(s.handleRevokeAdminToken)},
	}
}

// AdminRoute is an admin API endpoint and its permission, for tests and
// docs.
type AdminRoute struct {
	Pattern    string
	Permission adminauth.Permission
	Cluster    bool
}

// AdminRoutes lists the admin API's endpoints with their permissions.
func (s *Server) AdminRoutes() []AdminRoute {
	var out []AdminRoute
	for _, rt := range s.adminRoutes() {
		out = append(out, AdminRoute{Pattern: rt.pattern, Permission: rt.perm, Cluster: rt.cluster})
	}
	return out
}

// apiMux registers every admin route behind its permission check. A route
// without a known permission is a programming error: New would serve an
// endpoint open to any token, so it panics instead.
func (s *Server) apiMux() *http.ServeMux {
	api := http.NewServeMux()
	known := map[adminauth.Permission]bool{}
	for _, p := range adminauth.Permissions() {
		known[p] = true
	}
	for _, rt := range s.adminRoutes() {
		if !known[rt.perm] {
			panic(fmt.Sprintf("admin route %s has no known permission (%q)", rt.pattern, rt.perm))
		}
		api.Handle(rt.pattern, s.permitted(rt))
	}
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return api
}

// permitted runs rt's handler if the request's principal holds rt's
// permission (for all namespaces when rt is cluster-scoped). Reads are
// logged at debug; a write that fails or is refused is audited here (one
// that succeeds is audited by its handler, with what it changed).
func (s *Server) permitted(rt adminRoute) http.Handler {
	write := !strings.HasPrefix(rt.pattern, "GET ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalOf(r)
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		if err := adminauth.Authorize(p, rt.perm, "", rt.cluster); err != nil {
			s.forbid(rec, r, err)
		} else {
			rt.handler.ServeHTTP(rec, r)
		}
		s.log.Debug("admin call", "token", p.Name, "role", p.Role, "method", r.Method, "path", r.URL.Path, "status", rec.code)
		if write && rec.code >= 400 && rec.code != http.StatusForbidden {
			s.audit.record(adminEvent(r, "admin.failed", map[string]string{
				"method": r.Method, "path": r.URL.Path, "status": strconv.Itoa(rec.code), "permission": string(rt.perm),
			}))
		}
	})
}

// forbid answers 403 with err (a refusal naming the missing permission),
// logs and audits it.
func (s *Server) forbid(w http.ResponseWriter, r *http.Request, err error) {
	var fe *adminauth.ForbiddenError
	perm, ns := "", ""
	if errors.As(err, &fe) {
		perm, ns = string(fe.Permission), fe.Namespace
	}
	p := principalOf(r)
	s.log.Info("admin call refused", "token", p.Name, "role", p.Role, "method", r.Method, "path", r.URL.Path, "permission", perm, "namespace", ns)
	s.audit.record(adminEvent(r, "admin.refused", map[string]string{
		"method": r.Method, "path": r.URL.Path, "permission": perm, "namespace": ns, "reason": err.Error(),
	}))
	writeError(w, http.StatusForbidden, err)
}

// authorizeIn checks the request's principal may do perm in namespace ns
// (cluster: on a cluster-scoped thing); on refusal it answers 403 and
// returns false.
func (s *Server) authorizeIn(w http.ResponseWriter, r *http.Request, perm adminauth.Permission, ns string, cluster bool) bool {
	if err := adminauth.Authorize(principalOf(r), perm, ns, cluster); err != nil {
		s.forbid(w, r, err)
		return false
	}
	return true
}

// visible reports whether the request's principal sees namespace ns in a
// list (a namespaced token sees only its namespaces).
func visible(r *http.Request, ns string) bool { return principalOf(r).InNamespace(ns) }

// listNamespace checks a list's ?namespace= (or path namespace) filter:
// "" lists everything the principal sees; a namespace outside a scoped
// token's is refused.
func (s *Server) listNamespace(w http.ResponseWriter, r *http.Request, perm adminauth.Permission, ns string) bool {
	if ns == "" {
		return true
	}
	return s.authorizeIn(w, r, perm, ns, false)
}

// namespaceQueryRequired lets a namespaced token call a mesh-wide
// endpoint that filters by ?namespace= only with one of its namespaces.
func (s *Server) namespaceQueryRequired(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalOf(r)
		ns := r.URL.Query().Get("namespace")
		if p.Scoped() && ns == "" {
			s.forbid(w, r, &adminauth.ForbiddenError{Principal: p, Permission: adminauth.StatusRead,
				Detail: "lacks permission status.read in all namespaces: ask for one of its own with ?namespace= (-n NS)"})
			return
		}
		if !s.listNamespace(w, r, adminauth.StatusRead, ns) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// principalOf is the principal the request was authenticated as; the
// authenticate middleware always sets one before any admin route runs.
func principalOf(r *http.Request) adminauth.Principal {
	p, _ := adminauth.FromContext(r.Context())
	return p
}

// authenticate resolves the bearer token to a principal (the bootstrap
// admin.token is root; else an admin token from the store) and passes
// the request on with it, or answers 401. It runs before routing, so an
// unknown path reveals nothing without a token.
func (s *Server) authenticate(next http.Handler) http.Handler {
	unauthorized := func(w http.ResponseWriter, why string) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="trellis"`)
		writeError(w, http.StatusUnauthorized, errors.New("unauthorized: "+why+
			"; send Authorization: Bearer <token> with the token from the control plane's DATA_DIR/admin.token or one from trellis admin-token create"))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := adminhttp.BearerToken(r.Header.Get("Authorization"))
		if !ok || secret == "" {
			unauthorized(w, "no bearer token")
			return
		}
		var p adminauth.Principal
		if s.adminToken.Matches(secret) {
			p = adminauth.RootPrincipal()
		} else {
			var err error
			p, err = s.adminTokens.Authenticate(r.Context(), secret)
			switch {
			case errors.Is(err, admintokens.ErrUnauthenticated):
				why := "unknown token"
				if err != admintokens.ErrUnauthenticated {
					why = strings.TrimPrefix(err.Error(), admintokens.ErrUnauthenticated.Error()+": ")
				}
				s.log.Info("admin call unauthenticated", "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr, "reason", why)
				unauthorized(w, why)
				return
			case err != nil:
				s.writeResourceError(w, fmt.Errorf("authenticate admin token: %w", err))
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(adminauth.WithPrincipal(r.Context(), p)))
	})
}

func (s *Server) handleCreateAdminToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.CreateAdminTokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	resp, err := s.adminTokens.Create(r.Context(), req, principalOf(r))
	var forbidden *adminauth.ForbiddenError
	if errors.As(err, &forbidden) {
		s.forbid(w, r, err)
		return
	}
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	info := resp.Info
	s.log.Info("admin token created", "name", info.Name, "role", info.Role, "namespaces", strings.Join(info.Namespaces, ","), "created_by", info.CreatedBy, "expires", info.ExpiresAt)
	s.audit.record(adminEvent(r, "admintoken.created", map[string]string{
		"token_name": info.Name, "token_role": info.Role, "token_namespaces": strings.Join(info.Namespaces, ","), "expires": info.ExpiresAt.Format(time.RFC3339),
	}))
	writeJSON(w, http.StatusCreated, resp)
}

// adminTokenVisible: a namespaced principal sees and revokes only tokens
// limited to some of its own namespaces.
func adminTokenVisible(p adminauth.Principal, info adminapi.AdminTokenInfo) bool {
	if !p.Scoped() {
		return true
	}
	if len(info.Namespaces) == 0 {
		return false
	}
	for _, ns := range info.Namespaces {
		if !p.InNamespace(ns) {
			return false
		}
	}
	return true
}

func (s *Server) handleListAdminTokens(w http.ResponseWriter, r *http.Request) {
	items, err := s.adminTokens.List(r.Context())
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	p := principalOf(r)
	out := items[:0]
	for _, it := range items {
		if adminTokenVisible(p, it) {
			out = append(out, it)
		}
	}
	writeJSON(w, http.StatusOK, adminapi.AdminTokenListResponse{Items: out})
}

func (s *Server) handleRevokeAdminToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p := principalOf(r)
	if p.Scoped() {
		info, err := s.adminTokens.Get(r.Context(), name)
		if err != nil {
			s.writeResourceError(w, err)
			return
		}
		if !adminTokenVisible(p, info) {
			s.forbid(w, r, &adminauth.ForbiddenError{Principal: p, Permission: adminauth.AdminTokensWrite,
				Detail: fmt.Sprintf("lacks permission admintokens.write on admin token %q, which is not limited to namespaces of its own", name)})
			return
		}
	}
	info, err := s.adminTokens.Revoke(r.Context(), name)
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	s.log.Info("admin token revoked", "name", info.Name, "role", info.Role)
	s.audit.record(adminEvent(r, "admintoken.revoked", map[string]string{"token_name": info.Name, "token_role": info.Role}))
	writeJSON(w, http.StatusOK, info)
}
