package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/console"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/controlplane/resstore"
	"github.com/trellismesh/trellis/internal/controlplane/tokens"
	authz "github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
)

// maxBodyBytes bounds admin API request bodies.
const maxBodyBytes = 8 << 20

// routes builds the admin API handler. Every path under /api/ (and any
// unknown path) requires a bearer token (admin.token or an admin token),
// and each endpoint the permission adminRoutes gives it; /healthz and
// /readyz do not, nor does /metrics unless Config.MetricsRequireToken
// (then any token with status.read).
func (s *Server) routes() http.Handler {
	api := s.apiMux()

	open := http.NewServeMux()
	open.HandleFunc("GET "+adminapi.PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	open.HandleFunc("GET "+adminapi.PathReadyz, s.handleReadyz)
	open.Handle("GET "+adminapi.PathMetrics, s.metricsHandler())

	authed := s.authenticate(api)
	ui := s.consoleHandler(api)
	metrics := http.Handler(open)
	if s.cfg.MetricsRequireToken {
		metrics = s.authenticate(s.permitted(adminRoute{pattern: "GET " + adminapi.PathMetrics, perm: adminauth.StatusRead, handler: open}))
	}
	return s.countRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case adminapi.PathHealthz, adminapi.PathReadyz:
			open.ServeHTTP(w, r)
		case adminapi.PathMetrics:
			metrics.ServeHTTP(w, r)
		case console.Prefix:
			ui.ServeHTTP(w, r)
		default:
			if strings.HasPrefix(r.URL.Path, console.Prefix+"/") {
				ui.ServeHTTP(w, r)
				return
			}
			authed.ServeHTTP(w, r)
		}
	}))
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) countRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.metrics.apiRequests.WithLabelValues(methodLabel(r.Method), strconv.Itoa(rec.code)).Inc()
	})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.store.Revision(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("store: %w", err))
		return
	}
	if !s.cfg.Clock.Now().Before(s.ca.IntermediateExpiry()) {
		writeError(w, http.StatusServiceUnavailable, errors.New("ca: intermediate expired"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request) {
	var req adminapi.ApplyRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if len(req.Objects) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("apply: no objects in request"))
		return
	}
	var details []adminapi.ErrorDetail
	for i := range req.Objects {
		if err := resource.Validate(&req.Objects[i]); err != nil {
			details = append(details, validationDetails(i, &req.Objects[i], err)...)
			continue
		}
		// A policy must also compile in the engine every proxy runs, so
		// nothing is stored that a proxy would NACK.
		if req.Objects[i].Kind == resource.KindAuthorizationPolicy {
			if _, err := authz.Compile(req.Objects[i:i+1], authz.Options{}); err != nil {
				details = append(details, adminapi.ErrorDetail{Index: i, Resource: req.Objects[i].Ref(), Message: err.Error()})
			}
		}
	}
	if len(details) > 0 {
		writeJSON(w, http.StatusUnprocessableEntity, adminapi.ErrorBody{
			Error:   fmt.Sprintf("apply: %d problem(s) found; nothing was applied", len(details)),
			Details: details,
		})
		return
	}
	for i := range req.Objects {
		o := &req.Objects[i]
		kind, _ := resource.LookupKind(o.Kind)
		if !s.authorizeIn(w, r, adminauth.ResourcesWrite, o.Metadata.Namespace, !kind.Namespaced) {
			return
		}
	}
	results, err := s.res.Apply(r.Context(), req.Objects, req.DryRun)
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	s.warnUnknownServices(req.Objects, results)
	if !req.DryRun {
		for _, res := range results {
			s.metrics.applied.WithLabelValues(res.Kind, res.Result).Inc()
			if res.Result != adminapi.ResultUnchanged {
				s.log.Info("resource applied", "kind", res.Kind, "namespace", res.Namespace, "name", res.Name, "result", res.Result, "resource_version", res.ResourceVersion)
				s.audit.record(adminEvent(r, "resource.applied", map[string]string{
					"resource_kind": res.Kind, "namespace": res.Namespace, "name": res.Name, "result": res.Result, "resource_version": res.ResourceVersion,
				}))
			}
		}
	}
	writeJSON(w, http.StatusOK, adminapi.ApplyResponse{Results: results})
}

func validationDetails(i int, o *resource.Object, err error) []adminapi.ErrorDetail {
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		out := make([]adminapi.ErrorDetail, 0, len(ve.Errors))
		for _, fe := range ve.Errors {
			out = append(out, adminapi.ErrorDetail{Index: i, Resource: ve.Resource, Field: fe.Field, Message: fe.Message})
		}
		return out
	}
	return []adminapi.ErrorDetail{{Index: i, Resource: o.Ref(), Message: err.Error()}}
}

func (s *Server) lookupKind(w http.ResponseWriter, r *http.Request) (resource.KindInfo, bool) {
	name := r.PathValue("plural")
	kind, ok := resource.LookupKind(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown resource kind %q; known kinds: %s", name, knownKinds()))
		return resource.KindInfo{}, false
	}
	return kind, true
}

// pathNamespace returns the namespace for a single-resource path: namespaced
// kinds need one ("default" when the path has none), cluster-scoped kinds
// must not have one.
func pathNamespace(w http.ResponseWriter, r *http.Request, kind resource.KindInfo) (string, bool) {
	ns := r.PathValue("namespace")
	if !kind.Namespaced && ns != "" {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s is cluster-scoped; drop the namespace from the path", kind.Kind))
		return "", false
	}
	if kind.Namespaced && ns == "" {
		ns = "default"
	}
	return ns, true
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	kind, ok := s.lookupKind(w, r)
	if !ok {
		return
	}
	s.listResources(w, r, kind, r.URL.Query().Get("namespace"))
}

// listResources lists a kind in ns ("" for all), only the namespaces the
// caller's token sees.
func (s *Server) listResources(w http.ResponseWriter, r *http.Request, kind resource.KindInfo, ns string) {
	if kind.Namespaced && !s.listNamespace(w, r, adminauth.ResourcesRead, ns) {
		return
	}
	items, err := s.res.List(r.Context(), kind, ns)
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	if kind.Namespaced {
		items = slices.DeleteFunc(items, func(o resource.Object) bool { return !visible(r, o.Metadata.Namespace) })
	}
	writeJSON(w, http.StatusOK, adminapi.ListResponse{Items: items})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	kind, ok := s.lookupKind(w, r)
	if !ok {
		return
	}
	// GET /resources/{plural}/{namespace} on a namespaced kind lists a namespace.
	if kind.Namespaced && r.PathValue("namespace") == "" {
		s.listResources(w, r, kind, r.PathValue("name"))
		return
	}
	ns, ok := pathNamespace(w, r, kind)
	if !ok {
		return
	}
	// Cluster-scoped resources (the Mesh) are read by every token with
	// resources.read: they govern every namespace.
	if kind.Namespaced && !s.authorizeIn(w, r, adminauth.ResourcesRead, ns, false) {
		return
	}
	o, err := s.res.Get(r.Context(), kind, ns, r.PathValue("name"))
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	kind, ok := s.lookupKind(w, r)
	if !ok {
		return
	}
	ns, ok := pathNamespace(w, r, kind)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if !s.authorizeIn(w, r, adminauth.ResourcesWrite, ns, !kind.Namespaced) {
		return
	}
	if err := s.res.Delete(r.Context(), kind, ns, name); err != nil {
		s.writeResourceError(w, err)
		return
	}
	s.log.Info("resource deleted", "kind", kind.Kind, "namespace", ns, "name", name)
	s.audit.record(adminEvent(r, "resource.deleted", map[string]string{"resource_kind": kind.Kind, "namespace": ns, "name": name}))
	out := adminapi.DeleteResponse{Kind: kind.Kind, Name: name}
	if kind.Namespaced {
		out.Namespace = ns
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req adminapi.CreateTokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if !s.authorizeIn(w, r, adminauth.JoinTokensWrite, req.Namespace, false) {
		return
	}
	resp, err := s.tokens.Create(r.Context(), req)
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	s.metrics.tokensIssued.Inc()
	s.log.Info("join token issued", "token_id", resp.Info.ID, "spiffe_id", resp.Info.SPIFFEID, "expires", resp.Info.ExpiresAt)
	s.audit.record(adminEvent(r, "token.created", map[string]string{"token_id": resp.Info.ID, "spiffe_id": resp.Info.SPIFFEID, "service": resp.Info.Service, "expires": resp.Info.ExpiresAt.Format(time.RFC3339)}))
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) handleListTokens(w http.ResponseWriter, r *http.Request) {
	items, err := s.tokens.List(r.Context())
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	items = slices.DeleteFunc(items, func(t adminapi.TokenInfo) bool { return !visible(r, t.Namespace) })
	writeJSON(w, http.StatusOK, adminapi.TokenListResponse{Items: items})
}

func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	if principalOf(r).Scoped() {
		info, err := s.tokens.Info(r.Context(), r.PathValue("id"))
		if err != nil {
			s.writeResourceError(w, err)
			return
		}
		if !s.authorizeIn(w, r, adminauth.JoinTokensWrite, info.Namespace, false) {
			return
		}
	}
	info, err := s.tokens.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeResourceError(w, err)
		return
	}
	s.metrics.tokensRevoked.Inc()
	s.log.Info("join token revoked", "token_id", info.ID, "spiffe_id", info.SPIFFEID)
	s.audit.record(adminEvent(r, "token.revoked", map[string]string{"token_id": info.ID, "spiffe_id": info.SPIFFEID}))
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) writeResourceError(w http.ResponseWriter, err error) {
	var ae *adminapi.ObjectError
	var fe *tokens.FieldError
	var afe *admintokens.FieldError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, adminapi.ErrorBody{Error: err.Error(), Details: []adminapi.ErrorDetail{{Index: -1, Field: fe.Field, Message: fe.Msg}}})
	case errors.As(err, &afe):
		writeJSON(w, http.StatusBadRequest, adminapi.ErrorBody{Error: err.Error(), Details: []adminapi.ErrorDetail{{Index: -1, Field: afe.Field, Message: afe.Msg}}})
	case errors.As(err, &ae):
		msg := "apply: nothing was applied: " + err.Error()
		if len(ae.Applied) > 0 {
			var done []string
			for _, a := range ae.Applied {
				done = append(done, a.Kind+" "+strings.TrimPrefix(a.Namespace+"/", "/")+a.Name)
			}
			msg = fmt.Sprintf("apply: stopped at object %d: %v; applied before it: %s", ae.Index, err, strings.Join(done, ", "))
		}
		writeJSON(w, statusFor(ae.Err), adminapi.ErrorBody{
			Error:   msg,
			Details: []adminapi.ErrorDetail{{Index: ae.Index, Resource: ae.Resource, Message: ae.Err.Error()}},
		})
	case errors.Is(err, store.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("nothing was applied: %w", err))
	case errors.Is(err, store.ErrUnavailable):
		// A quorum-less etcd: the proxies keep their config; writes wait.
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("the control plane's store is unavailable, so the request may or may not have been carried out; check with trellis get once it is back, then retry: %w", err))
	default:
		code := statusFor(err)
		if code == http.StatusInternalServerError {
			s.log.Error("admin api", "err", err)
		}
		writeError(w, code, err)
	}
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, adminapi.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, adminapi.ErrConflict), errors.Is(err, resstore.ErrExternal):
		return http.StatusConflict
	case errors.Is(err, adminapi.ErrForbidden):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("request body: unexpected data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) { adminhttp.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, err error) { adminhttp.WriteError(w, code, err) }

func knownKinds() string {
	var names []string
	for _, k := range resource.Kinds() {
		names = append(names, k.Plural)
	}
	return strings.Join(names, ", ")
}

// methodLabel bounds the metric's label values: callers choose the method,
// and unauthenticated ones must not grow the series set.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// adminEvent is an audit event for a change made through the admin API:
// the actor is the name of the caller's token ("root" for admin.token),
// with its role and the caller's address.
func adminEvent(r *http.Request, kind string, attrs map[string]string) *pb.Event {
	p := principalOf(r)
	attrs["actor"] = p.Name
	attrs["actor_role"] = string(p.Role)
	if p.Scoped() {
		attrs["actor_namespaces"] = strings.Join(p.Namespaces, ",")
	}
	attrs["remote_addr"] = r.RemoteAddr
	return &pb.Event{Kind: kind, Attributes: attrs}
}
