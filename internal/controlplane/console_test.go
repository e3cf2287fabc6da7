package controlplane_test

import (
	"crypto/tls"
	"crypto/x509"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/cli/policycmd"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// browser is an HTTP client with a cookie jar that does not follow
// redirects, as a test's stand-in for a browser.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, cp *cptest.ControlPlane) *browser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(cp.APIURL(), "https://") {
		pemData, err := os.ReadFile(filepath.Join(cp.DataDir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemData)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &browser{t: t, base: cp.APIURL(), c: &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	code   int
	body   string
	header http.Header
}

func (b *browser) do(method, path string, form url.Values) answer {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(data), resp.Header}
}

func (b *browser) get(path string) answer { return b.do("GET", path, nil) }

// login logs in with token, which must succeed.
func (b *browser) login(token string) answer {
	b.t.Helper()
	a := b.do("POST", "/ui/login", url.Values{"token": {token}})
	if a.code != http.StatusSeeOther {
		b.t.Fatalf("login: %d %s", a.code, a.body)
	}
	return a
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf is the session's CSRF token, from a page's logout form.
func (b *browser) csrf() string {
	b.t.Helper()
	a := b.get("/ui/proxies")
	m := csrfField.FindStringSubmatch(a.body)
	if m == nil {
		b.t.Fatalf("no csrf field on /ui/proxies (%d):\n%s", a.code, a.body)
	}
	return m[1]
}

func TestConsoleLoginAndCookie(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	b := newBrowser(t, cp)

	if a := b.get("/ui/graph"); a.code != http.StatusSeeOther || !strings.HasPrefix(a.header.Get("Location"), "/ui/login?") {
		t.Fatalf("GET /ui/graph without a session: %d %s, want 303 to /ui/login", a.code, a.header.Get("Location"))
	}
	if a := b.do("POST", "/ui/login", url.Values{"token": {"trellis-admin.nobody.00"}}); a.code != http.StatusUnauthorized {
		t.Fatalf("login with a wrong token: %d, want 401", a.code)
	}
	a := b.login(cp.Token)
	cookies := a.header.Values("Set-Cookie")
	if len(cookies) != 1 {
		t.Fatalf("Set-Cookie: %q, want one", cookies)
	}
	ck := cookies[0]
	for _, want := range []string{controlplaneCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/ui"} {
		if !strings.Contains(ck, want) {
			t.Errorf("cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Errorf("cookie %q is Secure over plain HTTP: the browser would not send it back", ck)
	}
	if strings.Contains(ck, cp.Token) {
		t.Errorf("cookie %q holds the admin token", ck)
	}
	if g := b.get("/ui/graph"); g.code != http.StatusOK || !strings.Contains(g.body, "Service graph") {
		t.Fatalf("GET /ui/graph logged in: %d\n%s", g.code, g.body)
	}
	// A mesh with nothing in it says so on each page.
	for path, want := range map[string]string{
		"/ui/graph":     `id="empty"`,
		"/ui/proxies":   "No proxies registered",
		"/ui/policies":  "No AuthorizationPolicies",
		"/ui/anomalies": "No anomaly alerts",
	} {
		if a := b.get(path); a.code != http.StatusOK || !strings.Contains(a.body, want) {
			t.Errorf("GET %s on an empty mesh: %d, want the empty state %q\n%s", path, a.code, want, a.body)
		}
	}
	if a := b.get("/ui/nope"); a.code != http.StatusNotFound || !strings.Contains(a.body, `id="error-message"`) {
		t.Errorf("GET /ui/nope: %d, want a 404 error page", a.code)
	}
	// Logout needs the CSRF token, then ends the session.
	if a := b.do("POST", "/ui/logout", url.Values{}); a.code != http.StatusForbidden {
		t.Fatalf("logout without csrf: %d, want 403", a.code)
	}
	if a := b.do("POST", "/ui/logout", url.Values{"csrf": {b.csrf()}}); a.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", a.code)
	}
	if a := b.get("/ui/graph"); a.code != http.StatusSeeOther {
		t.Fatalf("GET /ui/graph after logout: %d, want 303 to login", a.code)
	}
}

const controlplaneCookie = "trellis_session"

func TestConsoleCookieSecureOverTLS(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{APIAddr: "0.0.0.0:0"})
	if !strings.HasPrefix(cp.APIURL(), "https://") {
		t.Fatalf("api url %s: want https", cp.APIURL())
	}
	b := newBrowser(t, cp)
	_, port, _ := net.SplitHostPort(cp.APIAddr())
	b.base = "https://127.0.0.1:" + port
	a := b.login(cp.Token)
	if ck := a.header.Get("Set-Cookie"); !strings.Contains(ck, "Secure") || !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Strict") {
		t.Fatalf("cookie over TLS %q: want Secure, HttpOnly, SameSite=Strict", ck)
	}
}

func TestConsoleCSRF(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	b := newBrowser(t, cp)
	b.login(cp.Token)
	good := b.csrf()
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"missing", url.Values{"intent": {"shop/frontend"}}},
		{"wrong", url.Values{"intent": {"shop/frontend"}, "csrf": {strings.Repeat("0", 64)}}},
		{"another session's", url.Values{"intent": {"shop/frontend"}, "csrf": {func() string { o := newBrowser(t, cp); o.login(cp.Token); return o.csrf() }()}}},
	} {
		a := b.do("POST", "/ui/suggestions/apply", tc.form)
		if a.code != http.StatusForbidden || !strings.Contains(a.body, "CSRF") {
			t.Errorf("%s csrf token: %d %s, want 403 naming CSRF", tc.name, a.code, a.body)
		}
	}
	// A cross-site POST is refused even with the right token.
	req, _ := http.NewRequest("POST", b.base+"/ui/suggestions/apply", strings.NewReader(url.Values{"csrf": {good}, "intent": {"x/y"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d, want 403", resp.StatusCode)
	}
	// The right token gets past the check (no such suggestion: 404).
	if a := b.do("POST", "/ui/suggestions/apply", url.Values{"csrf": {good}, "intent": {"x/y"}}); a.code != http.StatusNotFound {
		t.Errorf("POST with the right csrf token: %d %s, want 404 (no such suggestion)", a.code, a.body)
	}
}

// TestConsoleRoutesHavePermissions walks every console route: a session
// whose token lacks the route's permission (or, for a mesh-wide route,
// is limited to namespaces) is refused with a 403 naming it, as the
// admin API refuses it.
func TestConsoleRoutesHavePermissions(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	sessions := map[string]*browser{}
	sessionAs := func(req adminapi.CreateAdminTokenRequest) *browser {
		key := req.Role + "/" + strings.Join(req.Namespaces, ",")
		if b := sessions[key]; b != nil {
			return b
		}
		resp, err := cp.Client(t).CreateAdminToken(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t, cp)
		b.login(resp.Token)
		sessions[key] = b
		return b
	}
	known := map[adminauth.Permission]bool{}
	for _, p := range adminauth.Permissions() {
		known[p] = true
	}
	routes := cp.ConsoleRoutes()
	if len(routes) == 0 {
		t.Fatal("no console routes")
	}
	for _, rt := range routes {
		if !known[rt.Permission] {
			t.Errorf("%s: unknown permission %q", rt.Pattern, rt.Permission)
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.TrimSuffix(path, "{$}")
		var lacking []adminapi.CreateAdminTokenRequest
		for _, role := range adminauth.Roles() {
			if !role.Has(rt.Permission) {
				lacking = append(lacking, adminapi.CreateAdminTokenRequest{Role: string(role)})
			} else if rt.Cluster {
				lacking = append(lacking, adminapi.CreateAdminTokenRequest{Role: string(role), Namespaces: []string{"shop"}})
			}
		}
		for _, req := range lacking {
			b := sessionAs(req)
			form := url.Values(nil)
			if method == "POST" {
				form = url.Values{"csrf": {b.csrf()}, "intent": {"shop/frontend"}}
			}
			a := b.do(method, path, form)
			if a.code != http.StatusForbidden || !strings.Contains(a.body, string(rt.Permission)) {
				t.Errorf("%s as %s %v: %d, want 403 naming %s\n%s", rt.Pattern, req.Role, req.Namespaces, a.code, rt.Permission, a.body)
			}
		}
	}
}

func TestConsoleViewerCannotApply(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	resp, err := cp.Client(t).CreateAdminToken(t.Context(), adminapi.CreateAdminTokenRequest{Role: "viewer", Name: "looker"})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, cp)
	b.login(resp.Token)
	for _, p := range []string{"/ui/graph", "/ui/policies", "/ui/proxies", "/ui/certificates", "/ui/audit", "/ui/anomalies"} {
		if a := b.get(p); a.code != http.StatusOK {
			t.Errorf("viewer GET %s: %d\n%s", p, a.code, a.body)
		}
	}
	a := b.do("POST", "/ui/suggestions/apply", url.Values{"csrf": {b.csrf()}, "intent": {"shop/frontend"}})
	if a.code != http.StatusForbidden || !strings.Contains(a.body, "lacks permission resources.write") {
		t.Fatalf("viewer apply: %d, want 403 naming resources.write\n%s", a.code, a.body)
	}
	// The login and the refusal are audit events with the token's name.
	testutil.EventuallyWithin(t, 10*time.Second, "console.login and console.refused events of looker", func() bool {
		list, err := cp.Client(t).AuditEvents(t.Context(), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var login, refused bool
		for _, ev := range list.Events {
			login = login || ev.Kind == "console.login" && ev.Attributes["actor"] == "looker" && ev.Attributes["actor_role"] == "viewer"
			refused = refused || ev.Kind == "console.refused" && ev.Attributes["actor"] == "looker" && ev.Attributes["permission"] == "resources.write"
		}
		return login && refused
	})
	// Revoking the token ends the session at once.
	if _, err := cp.Client(t).RevokeAdminToken(t.Context(), "looker"); err != nil {
		t.Fatal(err)
	}
	if a := b.get("/ui/graph"); a.code != http.StatusSeeOther || !strings.Contains(a.header.Get("Location"), "revoked") {
		t.Fatalf("GET after revoke: %d %s, want 303 to login saying revoked", a.code, a.header.Get("Location"))
	}
}

func TestConsoleSessionExpires(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{ConsoleSessionTTL: 500 * time.Millisecond})
	b := newBrowser(t, cp)
	a := b.login(cp.Token)
	if ck := a.header.Get("Set-Cookie"); !strings.Contains(ck, "Max-Age=") {
		t.Errorf("cookie %q has no Max-Age", ck)
	}
	if a := b.get("/ui/proxies"); a.code != http.StatusOK {
		t.Fatalf("GET before expiry: %d", a.code)
	}
	time.Sleep(700 * time.Millisecond)
	// The jar may still send the cookie (Max-Age rounds to seconds); the
	// server refuses the session.
	if a := b.get("/ui/proxies"); a.code != http.StatusSeeOther || !strings.Contains(a.header.Get("Location"), "expired") {
		t.Fatalf("GET after expiry: %d %s, want 303 to login saying expired", a.code, a.header.Get("Location"))
	}
}

// No page, fragment, header or error of the console shows an admin
// token, root's or the session's own.
func TestConsoleLeaksNoToken(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	resp, err := cp.Client(t).CreateAdminToken(t.Context(), adminapi.CreateAdminTokenRequest{Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{cp.Token, resp.Token, strings.TrimPrefix(resp.Token, "trellis-admin."+resp.Info.Name+".")}
	for _, tok := range []string{cp.Token, resp.Token} {
		b := newBrowser(t, cp)
		var seen []answer
		seen = append(seen, b.get("/ui/login"), b.login(tok))
		for _, p := range []string{"/ui/", "/ui/graph", "/ui/graph?fragment=1", "/ui/policies", "/ui/policies/check?from=frontend.shop&to=catalog.shop",
			"/ui/proxies", "/ui/certificates", "/ui/audit", "/ui/audit?fragment=1", "/ui/anomalies", "/ui/nope"} {
			seen = append(seen, b.get(p))
		}
		seen = append(seen, b.do("POST", "/ui/suggestions/apply", url.Values{"csrf": {b.csrf()}, "intent": {"a/b"}}))
		for i, a := range seen {
			for _, s := range secrets {
				if strings.Contains(a.body, s) || strings.Contains(strings.Join(a.header.Values("Set-Cookie"), ";")+a.header.Get("Location"), s) {
					t.Errorf("answer %d (%d) shows an admin token", i, a.code)
				}
			}
		}
	}
}

// The what-if form answers with policy check's code: the same decision
// and policy as policycmd.Check for the same input.
func TestConsoleWhatIfIsPolicyCheck(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	if _, err := c.Apply(t.Context(), policyIn(t, "shop", "catalog-allow"), false); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, cp)
	b.login(cp.Token)
	for _, in := range []policycmd.CheckInput{
		{From: "frontend.shop", To: "catalog.shop", Method: "GET", Path: "/items"},
		{From: "payments.shop", To: "catalog.shop", Method: "GET", Path: "/items"},
	} {
		want, err := policycmd.Check(t.Context(), c, in)
		if err != nil {
			t.Fatal(err)
		}
		a := b.get("/ui/policies/check?" + url.Values{"from": {in.From}, "to": {in.To}, "method": {in.Method}, "path": {in.Path}}.Encode())
		if !strings.Contains(a.body, `id="check-decision">`+want.Decision+`<`) {
			t.Errorf("%+v: policy check says %s; the console:\n%s", in, want.Decision, a.body)
		}
		if want.Policy != "" && !strings.Contains(a.body, `id="check-policy">`+want.Policy+`<`) {
			t.Errorf("%+v: policy check names %s; the console does not", in, want.Policy)
		}
	}
	// Bad input is refused with policy check's message.
	bad := policycmd.CheckInput{From: "not a service", To: "catalog.shop"}
	_, want := policycmd.Check(t.Context(), c, bad)
	if want == nil {
		t.Fatal("policy check accepted --from 'not a service'")
	}
	a := b.get("/ui/policies/check?" + url.Values{"from": {bad.From}, "to": {bad.To}}.Encode())
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, `id="check-error"`) || !strings.Contains(a.body, html.EscapeString(want.Error())) {
		t.Errorf("what-if with --from %q: %d, want 400 with %q\n%s", bad.From, a.code, want, a.body)
	}
}

// GET /api/v1/audit/events reads the newest records of the event log:
// the apply just made is there, limit and after bound the answer, and a
// token limited to namespaces is refused (the log is mesh-wide).
func TestAuditEventsEndpoint(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.Apply(t.Context(), policyIn(t, "shop", name), false); err != nil {
			t.Fatal(err)
		}
	}
	var list adminapi.AuditEventList
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if list, err = c.AuditEvents(t.Context(), 0, 0); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range list.Events {
			if ev.Kind == "resource.applied" {
				n++
			}
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit events after 10s: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
	last := list.Events[len(list.Events)-1]
	if last.Index != list.Last || last.Attributes["name"] != "c" || last.Attributes["actor"] != "root" {
		t.Errorf("newest event %+v (last %d), want the apply of c by root", last, list.Last)
	}
	two, err := c.AuditEvents(t.Context(), 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(two.Events) != 2 || two.Events[1].Index != list.Last || two.Events[0].Index != list.Last-1 {
		t.Errorf("limit 2: %+v, want the newest two", two.Events)
	}
	after, err := c.AuditEvents(t.Context(), list.Last-1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Events) != 1 || after.Events[0].Index != list.Last {
		t.Errorf("after %d: %+v, want only the last", list.Last-1, after.Events)
	}
	scoped := mint(t, cp, adminapi.CreateAdminTokenRequest{Role: "viewer", Namespaces: []string{"shop"}})
	if _, err := scoped.AuditEvents(t.Context(), 0, 0); statusOf(err) != http.StatusForbidden {
		t.Errorf("namespaced viewer: %v, want 403", err)
	}
}
