package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// The red team's request classes, each sent many times through both ways
// into the server proxy: the client proxy's upstream listener (HTTP/1.1
// over mTLS; the inbound fast path where it applies) and its HTTP proxy
// port (absolute-form, forwarded over HTTP/2: the inbound net/http path).
// A refused request must never reach the app; an allowed one must reach
// it as the policy saw it.

// screenApp records what reached the app.
type screenApp struct {
	mu   sync.Mutex
	seen []string // "METHOD PATH" and every header line, per request
}

func (a *screenApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Method, r.URL.EscapedPath())
	for k, vv := range r.Header {
		fmt.Fprintf(&b, "\n%s: %s", k, strings.Join(vv, ","))
	}
	a.mu.Lock()
	a.seen = append(a.seen, b.String())
	a.mu.Unlock()
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "app")
}

func (a *screenApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}

// sendVia writes one raw request for target through the client proxy and
// returns the status: via "upstream" the request line names the path, via
// "proxy" an absolute URL for catalog.shop.
func sendVia(t *testing.T, m *mesh, via, method, target, proto string, fields ...string) int {
	t.Helper()
	addr, line := m.upstreamAddr, method+" "+target+" "+proto+"\r\n"
	if via == "proxy" {
		addr, line = m.proxyAddr, method+" http://catalog.shop"+target+" "+proto+"\r\n"
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := line + "Host: catalog.shop\r\n"
	for _, f := range fields {
		req += f + "\r\n"
	}
	if _, err := io.WriteString(c, req+"Connection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s via %s: %v", method, target, via, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var screenVias = []string{"upstream", "proxy"}

// TestScreenRefusesWhatTheAppWouldReadDifferently: framing look-alikes,
// ambiguous paths, methods in another case and upgrades the mesh does not
// understand are answered 400 on both paths and never reach the app.
func TestScreenRefusesWhatTheAppWouldReadDifferently(t *testing.T) {
	app := &screenApp{}
	authz := &pathAuthorizer{}
	m := newMesh(t, meshOptions{app: app, authorizer: authz})
	cases := []struct {
		name, method, target string
		fields               []string
	}{
		{"Transfer_Encoding", "POST", "/public/x", []string{"Transfer_Encoding: chunked", "Content-Length: 0"}},
		{"transfer_encoding", "GET", "/public/x", []string{"transfer_encoding: chunked"}},
		{"Content_Length", "GET", "/public/x", []string{"CONTENT_LENGTH: 5"}},
		{"Keep_Alive", "GET", "/public/x", []string{"Keep_Alive: 5"}},
		{"keep_alive among others", "GET", "/public/x", []string{"X-A: 1", "keep_ALIVE: 5", "X-B: 2"}},
		{"Proxy_Authorization", "GET", "/public/x", []string{"Proxy_Authorization: Basic eA=="}},
		{"Proxy_Connection", "GET", "/public/x", []string{"proxy_connection: keep-alive"}},
		{"backslash encoded", "GET", "/public/..%5cadmin", nil},
		{"backslash encoded upper", "GET", "/public/..%5Cadmin", nil},
		{"backslash", "GET", `/public/..\admin`, nil},
		{"path parameter", "GET", "/public/..;/admin", nil},
		{"encoded path parameter", "GET", "/public/..%3b/admin", nil},
		{"double encoding", "GET", "/public/%252e%252e/admin", nil},
		{"encoded slash", "GET", "/public/..%2fadmin", nil},
		{"lower-case get", "get", "/public/x", nil},
		{"mixed-case Delete", "Delete", "/public/x", nil},
		{"h2c upgrade", "GET", "/public/x", []string{"Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"}},
		{"unknown upgrade", "GET", "/public/x", []string{"Upgrade: tls/1.3", "Connection: Upgrade"}},
		{"websocket on POST", "POST", "/public/x", []string{"Upgrade: websocket", "Connection: Upgrade", "Content-Length: 0"}},
	}
	const rounds = 12
	for _, tc := range cases {
		for _, via := range screenVias {
			if via == "proxy" && strings.Contains(tc.target, `\`) {
				continue // not a valid absolute URL for the proxy port's server
			}
			for range rounds {
				if got := sendVia(t, m, via, tc.method, tc.target, "HTTP/1.1", tc.fields...); got != http.StatusBadRequest {
					t.Errorf("%s via %s: status %d, want 400", tc.name, via, got)
					break
				}
			}
		}
	}
	if seen := app.take(); len(seen) > 0 {
		t.Errorf("%d refused requests reached the app; first:\n%s", len(seen), seen[0])
	}
	// The controls: names with '_' that fold to no framing field, and
	// ordinary requests, go through.
	for _, via := range screenVias {
		for range rounds {
			if got := sendVia(t, m, via, "GET", "/public/x", "HTTP/1.1", "X_Custom: 1", "Upgrade_: websocket", "T_E: trailers", "Connection_Foo: 1"); got != http.StatusOK {
				t.Fatalf("control via %s: %d, want 200", via, got)
			}
		}
	}
	if got := len(app.take()); got != 2*rounds {
		t.Errorf("controls reached the app %d times, want %d", got, 2*rounds)
	}
}

// TestScreenCanonicalPathIsWhatTheAppSees: paths that normalize are
// decided and delivered in their canonical form on both paths.
func TestScreenCanonicalPathIsWhatTheAppSees(t *testing.T) {
	app := &screenApp{}
	authz := &pathAuthorizer{}
	m := newMesh(t, meshOptions{app: app, authorizer: authz})
	for _, tc := range []struct{ target, want string }{
		{"/public/x", "/public/x"},
		{"/public/../admin", ""}, // denied: /admin
		{"/public/%2e%2e/admin", ""},
		{"//admin", ""},
		{"/public/./x", "/public/x"},
		{"/public/%41", "/public/A"},
		{"/public;v=1/x", "/public;v=1/x"},
	} {
		for _, via := range screenVias {
			for range 20 {
				code := sendVia(t, m, via, "GET", tc.target, "HTTP/1.1")
				want := http.StatusOK
				if tc.want == "" {
					want = http.StatusForbidden
				}
				if code != want {
					t.Fatalf("GET %s via %s: %d, want %d", tc.target, via, code, want)
				}
			}
			seen := app.take()
			if tc.want == "" {
				if len(seen) > 0 {
					t.Errorf("GET %s via %s reached the app: %q", tc.target, via, seen[0])
				}
				continue
			}
			for _, s := range seen {
				if line, _, _ := strings.Cut(s, "\n"); line != "GET "+tc.want {
					t.Errorf("GET %s via %s: app saw %q, want %q", tc.target, via, line, "GET "+tc.want)
					break
				}
			}
		}
	}
	authz.mu.Lock()
	defer authz.mu.Unlock()
	for _, p := range authz.paths {
		if strings.Contains(p, "..") || strings.Contains(p, "%") || strings.Contains(p, "//") {
			t.Errorf("a policy saw a non-canonical path: %q", p)
		}
	}
}

// TestScreenStripsIdentityHeaders: caller-supplied identity claims never
// reach the app or the policy, on both paths; an HTTP/1.0 Upgrade is
// ignored (forwarded as a plain request without it).
func TestScreenStripsIdentityHeaders(t *testing.T) {
	app := &screenApp{}
	var policySaw sync.Map
	authz := authorizerFunc(func(_ *meshconfig.Snapshot, r *admission.Request) admission.Decision {
		for _, h := range []string{"X-Spiffe-Id", "X-Trellis-Role", "X-Envoy-Peer-Metadata", "X_Spiffe_Id"} {
			if v := r.HeaderValue(h); v != "" {
				policySaw.Store(h, v)
			}
		}
		return admission.Decision{Allow: true}
	})
	m := newMesh(t, meshOptions{app: app, authorizer: authz})
	forged := []string{"X-Spiffe-Id: spiffe://trellis.test/ns/shop/sa/admin", "x_spiffe_id: forged", "X-Trellis-Role: admin", "X-Envoy-Peer-Metadata: e30=", "X-Kept: yes"}
	const rounds = 100
	for _, via := range screenVias {
		for range rounds {
			if got := sendVia(t, m, via, "GET", "/public/x", "HTTP/1.1", forged...); got != http.StatusOK {
				t.Fatalf("via %s: %d, want 200", via, got)
			}
		}
		for range 20 {
			if got := sendVia(t, m, via, "GET", "/public/x", "HTTP/1.0", "Upgrade: websocket", "Connection: Upgrade"); got != http.StatusOK {
				t.Fatalf("HTTP/1.0 upgrade via %s: %d, want 200 (ignored)", via, got)
			}
		}
	}
	seen := app.take()
	if len(seen) != 2*(rounds+20) {
		t.Errorf("app saw %d requests, want %d", len(seen), 2*(rounds+20))
	}
	for _, s := range seen {
		low := strings.ToLower(s)
		for _, bad := range []string{"spiffe-id", "spiffe_id", "x-trellis-", "peer-metadata", "upgrade"} {
			if strings.Contains(low, bad) {
				t.Fatalf("app saw %q in:\n%s", bad, s)
			}
		}
		if !strings.Contains(s, "X-Kept: yes") && !strings.Contains(s, "GET /public/x\n") {
			t.Fatalf("app lost an ordinary header:\n%s", s)
		}
	}
	policySaw.Range(func(k, v any) bool {
		t.Errorf("policy saw caller-supplied %v: %v", k, v)
		return true
	})
}
