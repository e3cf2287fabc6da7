package dataplane_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestHTTP1GetPostKeepAlive(t *testing.T) {
	var appConns atomic.Int64
	l := listen(t)
	app := &http.Server{Handler: testutil.EchoApp(), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			appConns.Add(1)
		}
	}}
	go func() { _ = app.Serve(l) }()
	t.Cleanup(func() { _ = app.Close() })
	m := newMesh(t, meshOptions{appAddr: l.Addr().String()})
	c := testutil.HTTPClient(t)

	var reused atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused.Add(1)
		}
	}}
	const n = 5
	for i := range n {
		req, _ := http.NewRequest(http.MethodGet, m.url(fmt.Sprintf("/items/%d?color=red&size=%d", i, i)), nil)
		req.Host = "catalog.shop"
		req.Header.Set("X-Custom", "kept")
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "dropped")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, body := testutil.Do(t, c, req)
		for _, tc := range []struct{ header, want string }{
			{"X-Method", "GET"},
			{"X-Path", fmt.Sprintf("/items/%d", i)},
			{"X-Query", fmt.Sprintf("color=red&size=%d", i)},
			{"X-Host", "catalog.shop"},
			{"X-Got-Custom", "kept"},
			{"X-Got-Hop", ""},
		} {
			if got := resp.Header.Get(tc.header); got != tc.want {
				t.Errorf("request %d: app saw %s %q, want %q", i, tc.header, got, tc.want)
			}
		}
		if resp.StatusCode != http.StatusOK || body != "" {
			t.Errorf("request %d: got %d %q, want 200 and an empty body", i, resp.StatusCode, body)
		}
	}

	if got := appConns.Load(); got != 1 {
		t.Errorf("app accepted %d connections for %d sequential GETs, want 1 (keep-alive pool)", got, n)
	}
	// Requests with a body take the other pool to the app; it keeps its
	// connection alive too.
	body := strings.Repeat("post body ", 1000)
	for i := range n {
		req, _ := http.NewRequest(http.MethodPost, m.url("/orders"), strings.NewReader(body))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, got := testutil.Do(t, c, req)
		if resp.StatusCode != http.StatusOK || got != body || resp.Header.Get("X-Method") != "POST" {
			t.Errorf("POST %d: got %d %s with %d body bytes, want 200 POST echoing %d bytes", i, resp.StatusCode, resp.Header.Get("X-Method"), len(got), len(body))
		}
	}
	if got := reused.Load(); got != 2*n-1 {
		t.Errorf("client connection reused %d times, want %d (keep-alive through the outbound listener)", got, 2*n-1)
	}
	if got := appConns.Load(); got != 2 {
		t.Errorf("app accepted %d connections for %d sequential GETs and POSTs, want 2 (two keep-alive pools)", got, 2*n)
	}
}

func TestHTTPStatusHeadersAndMethods(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "hop")
		w.Header().Set("X-Method", r.Method)
		switch r.URL.Path {
		case "/missing":
			http.Error(w, "nope", http.StatusNotFound)
		case "/created":
			w.WriteHeader(http.StatusCreated)
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = io.WriteString(w, "hello")
		}
	})
	m := newMesh(t, meshOptions{app: app})
	c := testutil.HTTPClient(t)
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{http.MethodGet, "/", 200, "hello"},
		{http.MethodHead, "/", 200, ""},
		{http.MethodGet, "/missing", 404, "nope\n"},
		{http.MethodPut, "/created", 201, ""},
		{http.MethodDelete, "/nocontent", 204, ""},
		{http.MethodPatch, "/", 200, "hello"},
		{http.MethodOptions, "/", 200, "hello"},
	} {
		req, _ := http.NewRequest(tc.method, m.url(tc.path), nil)
		resp, body := testutil.Do(t, c, req)
		if resp.StatusCode != tc.code || body != tc.body {
			t.Errorf("%s %s: got %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.body)
		}
		if got := resp.Header.Values("Set-Cookie"); len(got) != 2 {
			t.Errorf("%s %s: Set-Cookie %q, want both cookies", tc.method, tc.path, got)
		}
		if got := resp.Header.Get("X-Secret"); got != "" {
			t.Errorf("%s %s: header named by the app's Connection header reached the client: %q", tc.method, tc.path, got)
		}
		if got := resp.Header.Get("X-Method"); got != tc.method {
			t.Errorf("%s %s: app saw method %q", tc.method, tc.path, got)
		}
	}
}

func TestChunkedBodiesAndTrailers(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != -1 || len(r.TransferEncoding) == 0 {
			t.Errorf("app: request ContentLength %d TransferEncoding %q, want a chunked body", r.ContentLength, r.TransferEncoding)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("app: read body: %v", err)
		}
		if got := r.Trailer.Get("X-Request-Sum"); got != "42" {
			t.Errorf("app: request trailer X-Request-Sum %q, want 42", got)
		}
		w.Header().Set("Trailer", "X-Response-Sum")
		for i := 0; i < 3; i++ {
			_, _ = w.Write(body)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Response-Sum", "7")
	})
	m := newMesh(t, meshOptions{app: app})
	c := testutil.HTTPClient(t)
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 10; i++ {
			_, _ = fmt.Fprintf(pw, "chunk %d;", i)
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, m.url("/chunked"), pr)
	req.Trailer = http.Header{"X-Request-Sum": {"42"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&want, "chunk %d;", i)
	}
	wantBody := strings.Repeat(want.String(), 3)
	if string(got) != wantBody {
		t.Errorf("body %q, want %q", got, wantBody)
	}
	if resp.ContentLength != -1 {
		t.Errorf("response ContentLength %d, want -1 (chunked)", resp.ContentLength)
	}
	if got := resp.Trailer.Get("X-Response-Sum"); got != "7" {
		t.Errorf("response trailer X-Response-Sum %q, want 7", got)
	}
}

func TestH2CFromApp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		appH2C   bool
		appProto string
	}{
		{"http app", meshconfig.ProtocolHTTP, false, "HTTP/1.1"},
		{"http2 app", meshconfig.ProtocolHTTP2, true, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh(t, meshOptions{protocol: tc.protocol, appH2C: tc.appH2C})
			c := testutil.H2CClient(t)
			for i := 0; i < 3; i++ {
				req, _ := http.NewRequest(http.MethodPost, m.url("/h2c"), strings.NewReader("over h2c"))
				resp, body := testutil.Do(t, c, req)
				if resp.ProtoMajor != 2 {
					t.Errorf("client spoke %s to the outbound listener, want HTTP/2", resp.Proto)
				}
				if got := resp.Header.Get("X-Proto"); got != tc.appProto {
					t.Errorf("app saw %s, want %s", got, tc.appProto)
				}
				if resp.StatusCode != 200 || body != "over h2c" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "over h2c")
				}
			}
		})
	}
}

func TestRequestMetrics(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := testutil.HTTPClient(t)
	for i := 0; i < 3; i++ {
		testutil.Get(t, c, m.url("/"))
	}
	in := map[string]string{
		"direction": "inbound", "source_principal": frontendID.String(), "source_namespace": "shop",
		"destination_service": "catalog", "destination_namespace": "shop", "response_code": "200", "mtls": "true",
	}
	if got := metric(t, m.serverMetrics, "trellis_requests_total", in); got != 3 {
		t.Errorf("server trellis_requests_total%v = %v, want 3", in, got)
	}
	out := map[string]string{
		"direction": "outbound", "source_principal": frontendID.String(), "destination_service": "catalog",
		"destination_namespace": "shop", "response_code": "200", "mtls": "true",
	}
	if got := metric(t, m.clientMetrics, "trellis_requests_total", out); got != 3 {
		t.Errorf("client trellis_requests_total%v = %v, want 3", out, got)
	}
	dur := map[string]string{"direction": "outbound", "destination_service": "catalog"}
	if got := metric(t, m.clientMetrics, "trellis_request_duration_seconds", dur); got != 3 {
		t.Errorf("client trellis_request_duration_seconds count = %v, want 3", got)
	}
	allow := map[string]string{"decision": "allow", "policy": ""}
	if got := metric(t, m.serverMetrics, "trellis_authz_decisions_total", allow); got != 3 {
		t.Errorf("trellis_authz_decisions_total%v = %v, want 3", allow, got)
	}
}

// TestResponsePassesUnchanged: the proxies add no Content-Type or Date the
// app did not send, and keep the ones it did.
func TestResponsePassesUnchanged(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/typed" {
			w.Header().Set("Content-Type", "application/x-thing")
			w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		} else {
			w.Header()["Content-Type"] = nil
			w.Header()["Date"] = nil
		}
		_, _ = io.WriteString(w, "<html>sniff me</html>")
	})
	m := newMesh(t, meshOptions{app: app})
	for _, c := range []*http.Client{testutil.HTTPClient(t), testutil.H2CClient(t)} {
		resp, _ := testutil.Get(t, c, m.url("/bare"))
		if got, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q added, want none", resp.Proto, got)
		}
		if got, ok := resp.Header["Date"]; ok {
			t.Errorf("%s: Date %q added, want none", resp.Proto, got)
		}
		resp, _ = testutil.Get(t, c, m.url("/typed"))
		if got := resp.Header.Get("Content-Type"); got != "application/x-thing" {
			t.Errorf("%s: Content-Type %q, want the app's", resp.Proto, got)
		}
		if got := resp.Header.Get("Date"); got != "Mon, 02 Jan 2006 15:04:05 GMT" {
			t.Errorf("%s: Date %q, want the app's", resp.Proto, got)
		}
	}
}
