package dataplane_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Wire-level tests of the HTTP/1.1 fast path (fastpath*.go, internal/h1):
// raw TCP clients write hand-made requests into the client proxy's
// upstream listener, through mTLS to the server proxy and on to a real
// app, so nothing between the test and the wire cleans up the bytes.

// rawClient is a hand-driven HTTP/1.1 client connection.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawClient) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read reads one final response (skipping 1xx) to a request of method,
// with its whole body.
func (r *rawClient) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, body, err := r.tryRead(method)
	if err != nil {
		r.t.Fatalf("read response to %s: %v", method, err)
	}
	return resp, body
}

func (r *rawClient) tryRead(method string) (*http.Response, string, error) {
	for {
		resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
		if err != nil {
			return nil, "", err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return resp, string(b), err
		}
		return resp, string(b), nil
	}
}

// expectClosed asserts the proxy closes the connection (EOF or reset, no
// further bytes).
func (r *rawClient) expectClosed(what string) {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(r.br)
	var ne net.Error
	if len(b) > 0 || (errors.As(err, &ne) && ne.Timeout()) {
		r.t.Errorf("%s: connection not closed: read %q, %v", what, b, err)
	}
}

func getReq(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: catalog.shop\r\n\r\n"
}

// pathAuthorizer denies /admin and /admin/* and POST /deny, allows the
// rest, and records each path it saw.
type pathAuthorizer struct {
	mu    sync.Mutex
	paths []string
	xfcc  []string
}

func (a *pathAuthorizer) Authorize(_ *meshconfig.Snapshot, r *admission.Request) admission.Decision {
	a.mu.Lock()
	a.paths = append(a.paths, r.Method+" "+r.Path)
	for _, n := range []string{"X-Forwarded-Client-Cert", "X_Forwarded_Client_Cert", "x-forwarded-client-cert"} {
		if v := r.HeaderValue(n); v != "" {
			a.xfcc = append(a.xfcc, n+"="+v)
		}
	}
	a.mu.Unlock()
	if r.Path == "/admin" || strings.HasPrefix(r.Path, "/admin/") || r.Path == "/deny" {
		return admission.Decision{Allow: false, Policy: "shop/no-admin"}
	}
	return admission.Decision{Allow: true}
}

// recordingApp is echoApp that also records every method and path it
// served.
type recordingApp struct {
	mu   sync.Mutex
	seen []string
}

func (a *recordingApp) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Method+" "+r.URL.Path)
		a.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (a *recordingApp) saw(s string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.seen {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func TestFastPipelinedRequests(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := dialRaw(t, m.upstreamAddr)
	// Four requests in one write, one with a body.
	c.send(getReq("/one") + getReq("/two?x=1") +
		"POST /three HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: 5\r\n\r\nhello" + getReq("/four"))
	for _, want := range []struct{ method, path, query, body string }{
		{"GET", "/one", "", ""}, {"GET", "/two", "x=1", ""}, {"POST", "/three", "", "hello"}, {"GET", "/four", "", ""},
	} {
		resp, body := c.read(want.method)
		if resp.StatusCode != 200 || resp.Header.Get("X-Method") != want.method || resp.Header.Get("X-Path") != want.path ||
			resp.Header.Get("X-Query") != want.query || body != want.body {
			t.Errorf("pipelined %s %s: got %d %s %s?%s %q, want 200 in order with body %q", want.method, want.path,
				resp.StatusCode, resp.Header.Get("X-Method"), resp.Header.Get("X-Path"), resp.Header.Get("X-Query"), body, want.body)
		}
	}
}

// A denied request's body is read and thrown away (or the connection
// closed): it must never be parsed as the next request.
func TestFastDeniedPostBodyIsNotARequest(t *testing.T) {
	app := &recordingApp{}
	auth := &pathAuthorizer{}
	m := newMesh(t, meshOptions{app: app.wrap(testutil.EchoApp()), authorizer: auth})
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: catalog.shop\r\n\r\n"

	t.Run("content-length", func(t *testing.T) {
		c := dialRaw(t, m.upstreamAddr)
		c.send(fmt.Sprintf("POST /deny HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled))
		c.send(getReq("/next"))
		resp, body := c.read("POST")
		if resp.StatusCode != 403 || !strings.Contains(body, "access denied") || resp.Header.Get("X-Trellis-Denied-By") != "shop/no-admin" {
			t.Errorf("denied POST: %d %q (denied-by %q), want 403 access denied by shop/no-admin", resp.StatusCode, body, resp.Header.Get("X-Trellis-Denied-By"))
		}
		resp, _ = c.read("GET")
		if resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/next" {
			t.Errorf("request after the denied POST: %d path %q, want 200 /next", resp.StatusCode, resp.Header.Get("X-Path"))
		}
	})
	t.Run("content-length-large", func(t *testing.T) {
		// Larger than the inline size, and split in two writes.
		body := smuggled + strings.Repeat("a", 20000)
		c := dialRaw(t, m.upstreamAddr)
		c.send(fmt.Sprintf("POST /deny HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:100]))
		time.Sleep(50 * time.Millisecond)
		c.send(body[100:] + getReq("/next2"))
		if resp, _ := c.read("POST"); resp.StatusCode != 403 {
			t.Errorf("denied POST: %d, want 403", resp.StatusCode)
		}
		resp, _, err := c.tryRead("GET")
		if err == nil && (resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/next2") {
			t.Errorf("request after the denied POST: %d path %q, want 200 /next2 (or a closed connection)", resp.StatusCode, resp.Header.Get("X-Path"))
		}
	})
	t.Run("chunked", func(t *testing.T) {
		c := dialRaw(t, m.upstreamAddr)
		c.send(fmt.Sprintf("POST /deny HTTP/1.1\r\nHost: catalog.shop\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled))
		c.send(getReq("/next3"))
		if resp, _ := c.read("POST"); resp.StatusCode != 403 {
			t.Errorf("denied chunked POST: %d, want 403", resp.StatusCode)
		}
		// Either the next request is served, or the connection closes.
		resp, _, err := c.tryRead("GET")
		if err == nil && (resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/next3") {
			t.Errorf("request after the denied chunked POST: %d path %q, want 200 /next3 (or a closed connection)", resp.StatusCode, resp.Header.Get("X-Path"))
		}
	})
	if app.saw("/smuggled") || app.saw("/deny") {
		t.Errorf("app saw %q; the denied request and its body must never reach it", app.seen)
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	for _, p := range auth.paths {
		if strings.Contains(p, "smuggled") {
			t.Errorf("the body of a denied request was authorized as a request: %q", auth.paths)
		}
	}
}

func TestFastXFCCSpoofStripped(t *testing.T) {
	auth := &pathAuthorizer{}
	var mu sync.Mutex
	var got [][]string
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var vals []string
		for k, vv := range r.Header {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Forwarded-Client-Cert") {
				for _, v := range vv {
					vals = append(vals, k+": "+v)
				}
			}
		}
		mu.Lock()
		got = append(got, vals)
		mu.Unlock()
	})
	m := newMesh(t, meshOptions{app: app, authorizer: auth})
	c := dialRaw(t, m.upstreamAddr)
	spoof := "X-Forwarded-Client-Cert: By=spiffe://trellis.test/ns/shop/sa/catalog;URI=spiffe://trellis.test/ns/kube-system/sa/admin\r\n" +
		"x-forwarded-client-cert: URI=spiffe://evil/1\r\n" +
		"X_Forwarded_Client_Cert: URI=spiffe://evil/2\r\n" +
		"x_forwarded-client_CERT: URI=spiffe://evil/3\r\n"
	// A bodyless GET, a POST with a body, and a pipelined pair.
	c.send("GET /a HTTP/1.1\r\nHost: catalog.shop\r\n" + spoof + "\r\n")
	c.read("GET")
	c.send("POST /b HTTP/1.1\r\nHost: catalog.shop\r\n" + spoof + "Content-Length: 2\r\n\r\nhi")
	c.read("POST")
	c.send("GET /c HTTP/1.1\r\nHost: catalog.shop\r\n" + spoof + "\r\n" + "GET /d HTTP/1.1\r\n" + spoof + "Host: catalog.shop\r\n\r\n")
	c.read("GET")
	c.read("GET")
	want := "X-Forwarded-Client-Cert: By=" + catalogID.String() + ";URI=" + frontendID.String()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4 {
		t.Fatalf("app served %d requests, want 4", len(got))
	}
	for i, vals := range got {
		if len(vals) != 1 || vals[0] != want {
			t.Errorf("request %d: app saw client-cert headers %q, want exactly [%q]", i, vals, want)
		}
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	if len(auth.xfcc) > 0 {
		t.Errorf("the authorizer saw caller-supplied client-cert headers %q, want none", auth.xfcc)
	}
}

// A chunked request body streams to the app and the app's echo streams
// back while the body is still coming: each piece is answered before the
// next is sent.
func TestFastChunkedFullDuplex(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	m := newMesh(t, meshOptions{app: app})
	c := dialRaw(t, m.upstreamAddr)
	c.send("POST /stream HTTP/1.1\r\nHost: catalog.shop\r\nTransfer-Encoding: chunked\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatalf("response head before the body ended: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("ping-%d-%s", i, strings.Repeat("z", i*3000))
		c.send(fmt.Sprintf("%x\r\n%s\r\n", len(msg), msg))
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if string(b) != msg {
			t.Fatalf("echo %d: %.30q, want %.30q", i, b, msg)
		}
	}
	c.send("0\r\n\r\n")
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Errorf("end of the echo: %q %v, want a clean end", rest, err)
	}
	resp.Body.Close()
	c.send(getReq("/after"))
	if resp, _ := c.read("GET"); resp.StatusCode != 200 {
		t.Errorf("request after the stream: %d, want 200", resp.StatusCode)
	}
}

// The app answers before reading the body (a 413 on a large upload): the
// caller gets the answer, not a reset, and the app sees nothing else.
func TestFastEarlyAppResponse(t *testing.T) {
	app := &recordingApp{}
	m := newMesh(t, meshOptions{app: app.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = io.WriteString(w, "too large")
			return
		}
		testutil.EchoApp().ServeHTTP(w, r)
	}))})
	// Each size many times: a response the proxy follows with a reset
	// (closing with the body unread) is lost now and then, not always.
	for i := range 40 {
		size := []int{100, 4 << 20}[i%2]
		c := dialRaw(t, m.upstreamAddr)
		const unit = "GET /smuggled HTTP/1.1\r\nHost: catalog.shop\r\n\r\n"
		body := strings.Repeat(unit, size/len(unit)+1)[:size]
		c.send(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: %d\r\n\r\n", size))
		go func() { _, _ = io.WriteString(c.c, body) }()
		resp, got, err := c.tryRead("POST")
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || got != "too large" {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("%d-byte upload (iteration %d) answered early: %d %q %v, want 413 \"too large\"", size, i, code, got, err)
		}
	}
	// A barrier: once a later request has reached the app, anything the
	// proxy made of the unread bodies would have reached it first.
	b := dialRaw(t, m.upstreamAddr)
	b.send(getReq("/barrier"))
	if resp, _ := b.read("GET"); resp.StatusCode != http.StatusOK || !app.saw("/barrier") {
		t.Fatalf("barrier request: %d, app saw it: %v", resp.StatusCode, app.saw("/barrier"))
	}
	if app.saw("/smuggled") {
		t.Errorf("app saw %q: an unread body was parsed as requests", app.seen)
	}
}

func TestFastHead204304KeepFraming(t *testing.T) {
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
			if r.Method != "HEAD" {
				_, _ = io.WriteString(w, strings.Repeat("h", 1234))
			}
		case "/204":
			w.Header().Set("X-Kind", "no-content")
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.WriteString(w, "plain:"+r.URL.Path)
		}
	})})
	c := dialRaw(t, m.upstreamAddr)
	check := func(method, path string, code int, wantBody string) *http.Response {
		t.Helper()
		c.send(method + " " + path + " HTTP/1.1\r\nHost: catalog.shop\r\n\r\n")
		resp, body := c.read(method)
		if resp.StatusCode != code || body != wantBody {
			t.Errorf("%s %s: %d %.20q, want %d %.20q", method, path, resp.StatusCode, body, code, wantBody)
		}
		// The next request on the connection must parse cleanly.
		c.send(getReq("/probe"))
		if resp2, body := c.read("GET"); resp2.StatusCode != 200 || body != "plain:/probe" {
			t.Errorf("after %s %s: %d %q, want 200 \"plain:/probe\" (framing broken)", method, path, resp2.StatusCode, body)
		}
		return resp
	}
	if resp := check("HEAD", "/head", 200, ""); resp.ContentLength != 1234 {
		t.Errorf("HEAD: Content-Length %d, want 1234 as the app said", resp.ContentLength)
	}
	check("GET", "/head", 200, strings.Repeat("h", 1234))
	if resp := check("GET", "/204", 204, ""); resp.Header.Get("X-Kind") != "no-content" || resp.Header.Get("Transfer-Encoding") != "" {
		t.Errorf("204: headers %v, want X-Kind and no framing", resp.Header)
	}
	if resp := check("GET", "/304", 304, ""); resp.Header.Get("Etag") != `"v1"` {
		t.Errorf("304: headers %v, want the ETag", resp.Header)
	}
}

// An app that answers HTTP/1.0-style, its body ended by closing the
// connection: the caller gets the whole body and keeps its connection,
// and the closed app connection is not reused.
func TestFastCloseDelimitedAppResponse(t *testing.T) {
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/legacy" {
			testutil.EchoApp().ServeHTTP(w, r)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_, _ = brw.WriteString("HTTP/1.0 200 OK\r\nX-Legacy: 1\r\n\r\n")
		_ = brw.Flush()
		for i := 0; i < 3; i++ {
			_, _ = io.WriteString(conn, fmt.Sprintf("part%d;", i))
			time.Sleep(10 * time.Millisecond)
		}
		conn.Close()
	})})
	c := dialRaw(t, m.upstreamAddr)
	for i := 0; i < 3; i++ {
		c.send(getReq("/legacy"))
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != "part0;part1;part2;" || resp.Header.Get("X-Legacy") != "1" {
			t.Errorf("close-delimited #%d: %d %q %v, want 200 \"part0;part1;part2;\"", i, resp.StatusCode, body, resp.Header)
		}
		c.send(getReq("/after"))
		if resp, _ := c.read("GET"); resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/after" {
			t.Errorf("after close-delimited #%d: %d, want 200 /after", i, resp.StatusCode)
		}
	}
}

func TestFastEarlyHints(t *testing.T) {
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("X-Final", "yes")
		_, _ = io.WriteString(w, "final:"+r.URL.Path)
	})})
	c := dialRaw(t, m.upstreamAddr)
	for _, p := range []string{"/hints", "/again"} {
		c.send(getReq(p))
		var final *http.Response
		for final == nil {
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			switch {
			case resp.StatusCode == http.StatusEarlyHints:
			case resp.StatusCode >= 200:
				final = resp
			default:
				t.Fatalf("%s: unexpected %d", p, resp.StatusCode)
			}
		}
		body, err := io.ReadAll(final.Body)
		if err != nil || final.StatusCode != 200 || string(body) != "final:"+p || final.Header.Get("X-Final") != "yes" {
			t.Errorf("%s after 103: %d %q %v, want 200 %q", p, final.StatusCode, body, err, "final:"+p)
		}
	}
}

// A first request on the fast path, then an Upgrade on the same client
// connection: the connection moves to net/http with the bytes already
// read and the upgrade still works (and is still authorized and gets a
// trustworthy XFCC).
func TestFastThenUpgradeOnSameConnection(t *testing.T) {
	ws := wsEchoApp(t)
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			ws.ServeHTTP(w, r)
			return
		}
		testutil.EchoApp().ServeHTTP(w, r)
	})})
	for _, pipelined := range []bool{false, true} {
		c := dialRaw(t, m.upstreamAddr)
		const key = "dGhlIHNhbXBsZSBub25jZQ=="
		up := "GET /chat HTTP/1.1\r\nHost: catalog.shop\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"X-Forwarded-Client-Cert: URI=spiffe://evil\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
		if pipelined {
			c.send(getReq("/first") + up)
		} else {
			c.send(getReq("/first"))
		}
		if resp, _ := c.read("GET"); resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/first" {
			t.Fatalf("first request: %d %q, want 200 /first", resp.StatusCode, resp.Header.Get("X-Path"))
		}
		if !pipelined {
			c.send(up)
		}
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("pipelined=%v: upgrade response: %v", pipelined, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
			t.Fatalf("pipelined=%v: upgrade: %d %v, want 101 with the accept key", pipelined, resp.StatusCode, resp.Header)
		}
		if got, want := resp.Header.Get("X-Got-Xfcc"), "By="+catalogID.String()+";URI="+frontendID.String(); got != want {
			t.Errorf("pipelined=%v: app saw XFCC %q, want %q", pipelined, got, want)
		}
		for _, msg := range []string{"hello", strings.Repeat("y", 50000)} {
			c.send(msg)
			b := make([]byte, len(msg))
			if _, err := io.ReadFull(c.br, b); err != nil || string(b) != msg {
				t.Fatalf("pipelined=%v: echo: %.20q %v, want %.20q", pipelined, b, err, msg)
			}
		}
	}
}

// Targets the inbound would rewrite before authorization leave the fast
// path and get exactly the answers they got before it: 403 for every way
// of spelling /admin, 400 for an encoded '?' or '#', and the app never
// sees /admin. Each runs on a keep-alive connection after a fast request.
func TestFastPathNormalizationUnchanged(t *testing.T) {
	app := &recordingApp{}
	auth := &pathAuthorizer{}
	m := newMesh(t, meshOptions{app: app.wrap(testutil.EchoApp()), authorizer: auth})
	cases := []struct {
		target string
		code   int
	}{
		{"/items/../admin", 403}, {"//admin", 403}, {"/./admin/x", 403}, {"/items/%2e%2e/admin", 403},
		{"/admin/", 403}, {"/%61dmin", 403}, {"/items/%2E%2E/admin", 403}, {"/items/.%2e/admin", 403},
		{"/items%3F/../admin", 400}, {"/items%23x", 400},
		{"/items", 200}, {"/items/./x", 200},
	}
	for _, reuse := range []bool{false, true} {
		var c *rawClient
		for _, tc := range cases {
			if c == nil || !reuse {
				c = dialRaw(t, m.upstreamAddr)
				c.send(getReq("/warm"))
				if resp, _ := c.read("GET"); resp.StatusCode != 200 {
					t.Fatalf("warm-up: %d", resp.StatusCode)
				}
			}
			c.send(getReq(tc.target))
			resp, _ := c.read("GET")
			if resp.StatusCode != tc.code {
				t.Errorf("reuse=%v GET %s: %d, want %d", reuse, tc.target, resp.StatusCode, tc.code)
			}
			if tc.code == 200 && resp.Header.Get("X-Path") == tc.target && strings.Contains(tc.target, "/.") {
				t.Errorf("GET %s reached the app unnormalized", tc.target)
			}
		}
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	for _, s := range app.seen {
		if strings.Contains(s, "admin") || strings.Contains(s, "..") || strings.Contains(s, "/./") {
			t.Errorf("app saw %q; want normalized paths and no /admin", s)
		}
	}
}

// countingApp serves echoApp and counts the connections it accepted.
func countingApp(t *testing.T, h http.Handler) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	l := listen(t)
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), conns
}

func TestFastReusesAppConnections(t *testing.T) {
	addr, conns := countingApp(t, testutil.EchoApp())
	m := newMesh(t, meshOptions{appAddr: addr})
	c := dialRaw(t, m.upstreamAddr)
	for i := 0; i < 100; i++ {
		if i%2 == 0 {
			c.send(getReq(fmt.Sprintf("/r%d", i)))
			if resp, _ := c.read("GET"); resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
		} else {
			c.send(fmt.Sprintf("PUT /r%d HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: 3\r\n\r\nabc", i))
			if resp, body := c.read("PUT"); resp.StatusCode != 200 || body != "abc" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("100 sequential requests opened %d app connections, want at most 2", n)
	}
}

// A caller that leaves in the middle of a large response: the pooled
// connection it used must not be handed to the next caller with the rest
// of that body in it.
func TestFastAbandonedResponseNotReused(t *testing.T) {
	big := strings.Repeat("B", 4<<20)
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "small:"+r.URL.Path)
	})})
	for i := 0; i < 3; i++ {
		c := dialRaw(t, m.upstreamAddr)
		c.send(getReq("/big"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		c.c.Close()
		for j := 0; j < 10; j++ {
			c2 := dialRaw(t, m.upstreamAddr)
			c2.send(getReq(fmt.Sprintf("/s%d", j)))
			resp, body := c2.read("GET")
			if resp.StatusCode != 200 || body != fmt.Sprintf("small:/s%d", j) {
				t.Fatalf("after an abandoned response: %d %.40q, want 200 small:/s%d", resp.StatusCode, body, j)
			}
			c2.c.Close()
		}
	}
}

func TestFastNoGoroutineGrowth(t *testing.T) {
	m := newMesh(t, meshOptions{})
	const workers = 4
	round := func(perWorker int) {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < perWorker; k += 10 {
					c, err := net.Dial("tcp", m.upstreamAddr)
					if err != nil {
						t.Error(err)
						return
					}
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					br := bufio.NewReader(c)
					for j := 0; j < 10; j++ {
						_, _ = io.WriteString(c, fmt.Sprintf("POST /g HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: 2\r\n\r\n%02d", j))
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							t.Error(err)
							break
						}
						b, _ := io.ReadAll(resp.Body)
						if resp.StatusCode != 200 || string(b) != fmt.Sprintf("%02d", j) {
							t.Errorf("%d %q", resp.StatusCode, b)
						}
					}
					c.Close()
				}
			}()
		}
		wg.Wait()
	}
	round(20) // warm the pools to this concurrency
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()
	round(50) // 200 requests
	// Under load a pool may end up holding a connection or two more than
	// after the warm-up (one serving goroutine each on the inbound side);
	// what must not happen is growth with the number of requests.
	slack := workers
	deadline := time.Now().Add(5 * time.Second)
	n := runtime.NumGoroutine()
	for n > base+slack && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > base+slack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after 200 requests and closing the clients, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// Shutdown closes fast-path connections that wait between requests at
// once, and the caller sees the connection end.
func TestFastShutdownClosesIdleConnections(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := dialRaw(t, m.upstreamAddr)
	c.send(getReq("/x"))
	if resp, _ := c.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := m.out.Shutdown(ctx); err != nil {
		t.Errorf("shutdown with only an idle connection: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v with only an idle connection, want it closed at once", d)
	}
	c.expectClosed("idle fast-path connection after shutdown")
}

// A request stuck mid-response (the app sent a first piece of a stream
// and then nothing), or still waiting for its response head, is cut when
// the shutdown deadline passes: Shutdown returns with the deadline's
// error, the caller's connection is closed and (inbound) the app's request
// is canceled, as with net/http.
func TestFastShutdownCutsStuckRequests(t *testing.T) {
	for _, side := range []string{"inbound", "outbound"} {
		for _, headSent := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/head-sent=%v", side, headSent), func(t *testing.T) {
				release := make(chan struct{})
				appDone := make(chan struct{}, 1)
				m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if headSent {
						_, _ = io.WriteString(w, "first piece;")
						w.(http.Flusher).Flush()
					}
					select {
					case <-r.Context().Done():
						appDone <- struct{}{}
					case <-release:
					}
				})})
				var once sync.Once
				unstick := func() { once.Do(func() { close(release) }) }
				t.Cleanup(unstick) // before the mesh's own shutdown (cleanups run last-in first-out)
				c := dialRaw(t, m.upstreamAddr)
				c.send(getReq("/stream"))
				if headSent {
					resp, err := http.ReadResponse(c.br, nil)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(resp.Body, make([]byte, len("first piece;"))); err != nil {
						t.Fatal(err)
					}
				} else {
					time.Sleep(100 * time.Millisecond)
				}
				shut := m.in.Shutdown
				if side == "outbound" {
					shut = m.out.Shutdown
				}
				done := make(chan error, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					defer cancel()
					done <- shut(ctx)
				}()
				select {
				case err := <-done:
					if err == nil {
						t.Errorf("%s shutdown with a stuck request returned nil, want the deadline's error", side)
					}
				case <-time.After(5 * time.Second):
					t.Errorf("%s Shutdown(300ms deadline) still blocked after 5s on a stuck fast-path request", side)
				}
				if side == "inbound" {
					select {
					case <-appDone:
					case <-time.After(3 * time.Second):
						t.Errorf("the app's request was not canceled after the inbound shut down")
					}
				}
				unstick()
				if !headSent {
					// The caller gets an error answer or a closed connection,
					// never a hang.
					_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if resp, _, err := c.tryRead("GET"); err == nil && resp.StatusCode == 200 {
						t.Errorf("stuck request cut by shutdown answered 200")
					}
				}
			})
		}
	}
}

// A caller that goes away while a streamed response is stalled (the app
// sent a first piece, then waits) must not pin the app's request: the
// app's request is canceled, as the net/http path did (its request
// context ended when the caller's connection closed).
func TestFastCallerGoneMidStreamCancelsApp(t *testing.T) {
	release := make(chan struct{})
	appDone := make(chan struct{}, 1)
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first piece;")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			appDone <- struct{}{}
		case <-release:
		}
	})})
	var once sync.Once
	unstick := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unstick)
	c := dialRaw(t, m.upstreamAddr)
	c.send(getReq("/stream"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, len("first piece;"))); err != nil {
		t.Fatal(err)
	}
	c.c.Close()
	select {
	case <-appDone:
	case <-time.After(5 * time.Second):
		t.Errorf("caller closed its connection mid-stream; the app's request was still open 5s later")
	}
	unstick()
}

// PERMISSIVE plaintext callers take the fast path too: a spoofed XFCC is
// dropped (and none added), and once the mesh turns STRICT the next
// request on the same connection is refused and the connection closed.
func TestFastPermissiveThenStrict(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{mode: "PERMISSIVE", app: hits.wrap(testutil.EchoApp())})
	c := dialRaw(t, m.inboundAddr)
	c.send("GET /p HTTP/1.1\r\nHost: catalog.shop\r\nX-Forwarded-Client-Cert: URI=spiffe://evil\r\nX_Forwarded_Client_Cert: URI=spiffe://evil2\r\n\r\n")
	resp, _ := c.read("GET")
	if resp.StatusCode != 200 || len(resp.Header.Values("X-Got-Xfcc")) != 0 {
		t.Errorf("plaintext PERMISSIVE: %d, app saw XFCC %q; want 200 and none", resp.StatusCode, resp.Header.Values("X-Got-Xfcc"))
	}
	snap := *m.snap.get()
	snap.MTLSMode = "STRICT"
	snap.Version = "2"
	m.snap.set(&snap)
	c.send("POST /q HTTP/1.1\r\nHost: catalog.shop\r\nContent-Length: 3\r\n\r\nabc" + getReq("/r"))
	resp, body := c.read("POST")
	if resp.StatusCode != 403 || !strings.Contains(body, "mutual TLS required") {
		t.Errorf("plaintext after STRICT: %d %q, want 403 mutual TLS required", resp.StatusCode, body)
	}
	c.expectClosed("plaintext connection after STRICT")
	if n := hits.n.Load(); n != 1 {
		t.Errorf("app reached %d times, want 1 (only before STRICT)", n)
	}
}

// STRICT: a plaintext caller on the inbound port gets no HTTP answer at
// all, on the fast path as before.
func TestFastStrictRefusesPlaintext(t *testing.T) {
	var hits counter
	m := newMesh(t, meshOptions{app: hits.wrap(testutil.EchoApp())})
	c := dialRaw(t, m.inboundAddr)
	c.send(getReq("/") + getReq("/"))
	c.expectClosed("plaintext request to a STRICT inbound")
	if hits.n.Load() != 0 {
		t.Errorf("app reached %d times over plaintext, want 0", hits.n.Load())
	}
}

// TestFastLargeResponseHead: a response head larger than the fast path's
// buffer (here 40 kB of cookies) is read by net/http's parser instead and
// forwarded whole, framing intact.
func TestFastLargeResponseHead(t *testing.T) {
	big := strings.Repeat("c", 4000)
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			for i := range 10 {
				w.Header().Add("Set-Cookie", fmt.Sprintf("k%d=%s", i, big))
			}
		}
		_, _ = io.WriteString(w, "plain:"+r.URL.Path)
	})})
	c := dialRaw(t, m.upstreamAddr)
	c.send(getReq("/big"))
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || body != "plain:/big" || len(resp.Header["Set-Cookie"]) != 10 || resp.Header["Set-Cookie"][9] != "k9="+big {
		t.Errorf("GET /big: %d %q with %d cookies, want 200 \"plain:/big\" with 10", resp.StatusCode, body, len(resp.Header["Set-Cookie"]))
	}
	c.send(getReq("/probe"))
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "plain:/probe" {
		t.Errorf("after the large head: %d %q, want 200 \"plain:/probe\"", resp.StatusCode, body)
	}
}

// TestFastConnectionCloseAnswered: a request saying "Connection: close"
// gets a response saying so, and then the connection ends.
func TestFastConnectionCloseAnswered(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := dialRaw(t, m.upstreamAddr)
	c.send("GET /x HTTP/1.1\r\nHost: catalog.shop\r\nConnection: close\r\n\r\n")
	resp, _ := c.read("GET")
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("GET with Connection: close: %d, Close=%v, want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.br.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection still open after Connection: close (read %d bytes)", n)
	}
}

// TestFastIdleConnectionsReusedAfterCheck: pooled connections idle for
// over a second are checked before reuse, and a healthy one passes. (The
// check once failed on the last exchange's expired watch deadline, so
// every pause over a second cost a new mTLS handshake to the peer and a
// new app connection.)
func TestFastIdleConnectionsReusedAfterCheck(t *testing.T) {
	addr, appConns := countingApp(t, testutil.EchoApp())
	m := newMesh(t, meshOptions{appAddr: addr})
	c := dialRaw(t, m.upstreamAddr)
	for i := range 3 {
		if i > 0 {
			time.Sleep(1300 * time.Millisecond) // past checkIdleAfter
		}
		c.send(getReq(fmt.Sprintf("/r%d", i)))
		if resp, _ := c.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if n := appConns.Load(); n != 1 {
		t.Errorf("3 requests 1.3 s apart opened %d app connections, want 1 (reused after the idle check)", n)
	}
	if n := metric(t, m.serverMetrics, "trellis_requests_total", nil); n != 3 {
		t.Errorf("server proxy counted %v requests, want 3", n)
	}
}

// TestFastSlowResponseOutlivesIdleTimeout: a request whose response takes
// longer than the idle timeout is not taken for a caller gone away (the
// idle deadline left on the caller's connection once failed the caller
// check, and such requests were cut with 499).
func TestFastSlowResponseOutlivesIdleTimeout(t *testing.T) {
	m := newMesh(t, meshOptions{idleTimeout: 300 * time.Millisecond, app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		_, _ = io.WriteString(w, "slow")
	})})
	c := dialRaw(t, m.upstreamAddr)
	c.send(getReq("/slow"))
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "slow" {
		t.Errorf("GET /slow: %d %q, want 200 \"slow\"", resp.StatusCode, body)
	}
}
