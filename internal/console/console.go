package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
)

// Prefix is where the console is served.
const Prefix = "/ui"

// CookieName is the session cookie's name.
const CookieName = "trellis_session"

// DefaultSessionTTL is a session's lifetime when Config.SessionTTL is 0.
const DefaultSessionTTL = 8 * time.Hour

//go:embed assets
var assets embed.FS

// Config configures New. API and Authenticate are required.
type Config struct {
	// API serves the admin API's routes (/api/...) for a request whose
	// context holds the caller's principal (adminauth.WithPrincipal): it
	// checks the principal's permissions as for any admin call.
	API http.Handler
	// Authenticate resolves an admin token given at login to its
	// principal, or fails for an unknown, expired or revoked one.
	Authenticate func(ctx context.Context, token string) (adminauth.Principal, error)
	// Revalidate, when set, is asked on every request whether the
	// session's principal still holds (its token not revoked or expired
	// since login); an error ends the session.
	Revalidate func(ctx context.Context, p adminauth.Principal) error
	// SessionTTL is how long a session lasts from login; 0 means
	// DefaultSessionTTL.
	SessionTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Audit, when set, records an audit event of kind for the request,
	// with p as its actor (the zero Principal before login): logins,
	// failed logins, logouts and the console's refusals. The admin API
	// calls a page makes record their own events.
	Audit func(r *http.Request, p adminauth.Principal, kind string, attrs map[string]string)
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Console serves the web console. Create it with New.
type Console struct {
	cfg      Config
	sessions *sessions
	tmpl     *template.Template
	mux      *http.ServeMux
}

// Route is one console page or action and the permission it needs, as
// adminRoutes gives each admin API endpoint one; docs/console.md shows
// them.
type Route struct {
	Pattern    string // http.ServeMux pattern under Prefix
	Permission adminauth.Permission
	// Cluster: mesh-wide, so a token limited to namespaces is refused.
	Cluster bool
	handler func(w http.ResponseWriter, r *http.Request, ss *session)
}

// routes are the console's pages and actions behind a session. Login,
// logout and the static assets need none.
func (c *Console) routes() []Route {
	return []Route{
		{"GET " + Prefix + "/{$}", adminauth.StatusRead, false, c.home},
		{"GET " + Prefix + "/graph", adminauth.StatusRead, true, c.graphPage},
		{"GET " + Prefix + "/policies", adminauth.ResourcesRead, false, c.policiesPage},
		{"GET " + Prefix + "/policies/check", adminauth.ResourcesRead, false, c.checkPage},
		{"GET " + Prefix + "/proxies", adminauth.StatusRead, false, c.proxiesPage},
		{"GET " + Prefix + "/proxies/{instance}", adminauth.StatusRead, false, c.proxyPage},
		{"GET " + Prefix + "/certificates", adminauth.StatusRead, false, c.certificatesPage},
		{"GET " + Prefix + "/audit", adminauth.AuditRead, true, c.auditPage},
		{"GET " + Prefix + "/anomalies", adminauth.StatusRead, true, c.anomaliesPage},
		{"POST " + Prefix + "/suggestions/apply", adminauth.ResourcesWrite, false, c.applySuggestion},
	}
}

// Routes lists the console's routes with their permissions, for tests
// and docs.
func (c *Console) Routes() []Route { return c.routes() }

// New builds the console.
func New(cfg Config) (*Console, error) {
	if cfg.API == nil || cfg.Authenticate == nil {
		return nil, errors.New("console: API and Authenticate are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = func(*http.Request, adminauth.Principal, string, map[string]string) {}
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	c := &Console{cfg: cfg, tmpl: tmpl, sessions: &sessions{m: map[string]*session{}, now: cfg.Now, ttl: cfg.SessionTTL}}
	static, _ := fs.Sub(assets, "assets/static")
	mux := http.NewServeMux()
	mux.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+Prefix+"/login", c.loginPage)
	mux.HandleFunc("POST "+Prefix+"/login", c.login)
	mux.HandleFunc("POST "+Prefix+"/logout", c.logout)
	for _, rt := range c.routes() {
		mux.Handle(rt.Pattern, c.withSession(rt))
	}
	mux.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		c.renderError(w, r, nil, http.StatusNotFound, fmt.Sprintf("no such page: %s %s", r.Method, r.URL.Path))
	})
	c.mux = mux
	return c, nil
}

// ServeHTTP serves every path under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if r.URL.Path == Prefix {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// withSession runs rt for a request with a live session, after checking
// the CSRF token of a POST and rt's permission.
func (c *Console) withSession(rt Route) http.Handler {
	post := strings.HasPrefix(rt.Pattern, "POST ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, why := c.session(r)
		if ss == nil {
			if post {
				c.renderError(w, r, nil, http.StatusUnauthorized, "not logged in: "+why+"; log in again")
				return
			}
			http.Redirect(w, r, Prefix+"/login?"+url.Values{"next": {r.URL.RequestURI()}, "why": {why}}.Encode(), http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if post {
			if !sameOrigin(r) || !ss.csrfOK(csrfOf(r)) {
				c.refuse(w, r, ss, "", errCSRF)
				return
			}
		}
		if err := adminauth.Authorize(ss.principal, rt.Permission, "", rt.Cluster); err != nil {
			c.refuse(w, r, ss, rt.Permission, err)
			return
		}
		rt.handler(w, r, ss)
	})
}

var errCSRF = errors.New("forbidden: the form's CSRF token is missing or wrong, or it was sent from another site (reload the page and try again)")

// refuse answers 403 with err, logs and audits it (console.refused).
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, ss *session, perm adminauth.Permission, err error) {
	c.cfg.Logger.Info("console call refused", "token", ss.principal.Name, "role", ss.principal.Role, "method", r.Method, "path", r.URL.Path, "permission", perm, "reason", err)
	c.cfg.Audit(r, ss.principal, "console.refused", map[string]string{
		"method": r.Method, "path": r.URL.Path, "permission": string(perm), "reason": err.Error(),
	})
	c.renderError(w, r, ss, http.StatusForbidden, err.Error())
}

// csrfOf is a POST's CSRF token: the form field or the X-CSRF-Token
// header.
func csrfOf(r *http.Request) string {
	if v := r.Header.Get("X-CSRF-Token"); v != "" {
		return v
	}
	return r.PostFormValue("csrf")
}

// sameOrigin refuses a request a browser marks as cross-site, or whose
// Origin is another host.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// session is the request's live session, or nil and why not.
func (c *Console) session(r *http.Request) (*session, string) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil, "no session"
	}
	ss, expired := c.sessions.get(ck.Value)
	if expired {
		return nil, "session expired"
	}
	if ss == nil {
		return nil, "no session"
	}
	if c.cfg.Revalidate != nil {
		if err := c.cfg.Revalidate(r.Context(), ss.principal); err != nil {
			c.sessions.delete(ss.id)
			return nil, "the token is no longer valid (" + err.Error() + ")"
		}
	}
	return ss, ""
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, nil, http.StatusOK, "login", map[string]any{"Next": safeNext(r.URL.Query().Get("next")), "Why": r.URL.Query().Get("why")})
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix+"/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return Prefix + "/graph"
	}
	return next
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	if !sameOrigin(r) {
		c.render(w, r, nil, http.StatusForbidden, "login", map[string]any{"Next": next, "Error": "refused: the login form was posted from another site"})
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	p, err := c.cfg.Authenticate(r.Context(), token)
	if token == "" || err != nil {
		c.cfg.Logger.Info("console login refused", "remote_addr", r.RemoteAddr)
		c.cfg.Audit(r, adminauth.Principal{}, "console.login_failed", map[string]string{})
		c.render(w, r, nil, http.StatusUnauthorized, "login", map[string]any{"Next": next,
			"Error": "that token is not valid: give the control plane's DATA_DIR/admin.token or a token from trellis admin-token create"})
		return
	}
	ss := c.sessions.create(p)
	c.cfg.Logger.Info("console login", "token", p.Name, "role", p.Role, "remote_addr", r.RemoteAddr)
	c.cfg.Audit(r, p, "console.login", map[string]string{})
	c.setCookie(w, r, ss.id, int((c.cfg.SessionTTL+time.Second-1)/time.Second))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	ss, _ := c.session(r)
	if ss != nil {
		if !sameOrigin(r) || !ss.csrfOK(csrfOf(r)) {
			c.refuse(w, r, ss, "", errCSRF)
			return
		}
		c.sessions.delete(ss.id)
		c.cfg.Audit(r, ss.principal, "console.logout", map[string]string{})
	}
	c.setCookie(w, r, "", -1)
	http.Redirect(w, r, Prefix+"/login?why=logged+out", http.StatusSeeOther)
}

// client is an admin API client whose calls run c.cfg.API in process as
// ss's principal: the same handlers, permission checks and audit events
// as the CLI's calls.
func (c *Console) client(r *http.Request, ss *session) *adminapi.Client {
	return &adminapi.Client{BaseURL: "http://console.invalid", HTTP: &http.Client{
		Transport: inProcess{api: c.cfg.API, principal: ss.principal, remote: r.RemoteAddr},
		Timeout:   30 * time.Second,
	}}
}

type inProcess struct {
	api       http.Handler
	principal adminauth.Principal
	remote    string
}

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(adminauth.WithPrincipal(req.Context(), t.principal))
	req.RemoteAddr = t.remote
	req.RequestURI = req.URL.RequestURI()
	rec := httptest.NewRecorder()
	t.api.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// apiError renders err from an admin API call or a policy command: its
// status (403 naming the missing permission) and message; bad input is
// 400.
func (c *Console) apiError(w http.ResponseWriter, r *http.Request, ss *session, err error) {
	var se *adminapi.StatusError
	var ee *exitcode.Error
	switch {
	case errors.As(err, &se):
		c.renderError(w, r, ss, se.Status, se.Error())
	case errors.As(err, &ee) && ee.Code == exitcode.User:
		c.renderError(w, r, ss, http.StatusBadRequest, err.Error())
	default:
		c.cfg.Logger.Error("console page failed", "path", r.URL.Path, "err", err)
		c.renderError(w, r, ss, http.StatusInternalServerError, err.Error())
	}
}

func (c *Console) renderError(w http.ResponseWriter, r *http.Request, ss *session, code int, msg string) {
	c.render(w, r, ss, code, "error", map[string]any{"Code": code, "Status": http.StatusText(code), "Message": msg})
}

// page is what every template gets.
type page struct {
	Name     string
	LoggedIn bool
	User     adminauth.Principal
	CSRF     string
	Data     any
	Path     string
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, ss *session, code int, name string, data any) {
	tmpl := name
	if r.URL.Query().Get("fragment") == "1" {
		tmpl = name + "-body"
		if c.tmpl.Lookup(tmpl) == nil {
			tmpl = name
		}
	}
	pg := page{Name: name, Data: data, Path: r.URL.Path}
	if ss != nil {
		pg.LoggedIn, pg.User, pg.CSRF = true, ss.principal, ss.csrf
	}
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, tmpl, pg); err != nil {
		c.cfg.Logger.Error("console template", "page", name, "err", err)
		http.Error(w, "console: rendering "+name+" failed; see the control plane's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (c *Console) home(w http.ResponseWriter, r *http.Request, _ *session) {
	http.Redirect(w, r, Prefix+"/graph", http.StatusFound)
}
