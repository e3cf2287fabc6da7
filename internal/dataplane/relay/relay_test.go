package relay_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/testutil"
)

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveRaw answers every connection accepted on a loopback listener with
// handle and returns the listener's address.
func serveRaw(t testing.TB, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String()
}

// rawExchange sends a raw request head (and anything after it) to addr and
// returns the parsed response with its body read.
func rawExchange(t testing.TB, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	resp.Body.Close()
	return resp, string(body)
}

func parseRequest(t testing.TB, raw string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return r
}

func TestNewOutRequestHopHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		head string // header lines after the request line and Host
		want http.Header
	}{
		{
			name: "fixed hop-by-hop headers",
			head: "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: Basic eA==\r\nTrailer: X-T\r\nUpgrade: websocket\r\nX-End: 1\r\n",
			want: http.Header{"X-End": {"1"}},
		},
		{
			name: "headers the Connection header names, over several lines, any case",
			head: "Connection: keep-alive, X-A ,x-b\r\nConnection: X-C\r\nX-A: a\r\nX-B: b\r\nX-C: c\r\nX-D: d\r\n",
			want: http.Header{"X-D": {"d"}},
		},
		{
			name: "close, keep-alive and upgrade tokens delete nothing else",
			head: "Connection: close, keep-alive, upgrade,\r\nClose: 1\r\nX-End: 1\r\n",
			want: http.Header{"Close": {"1"}, "X-End": {"1"}},
		},
		{
			name: "TE: trailers is kept, on its own",
			head: "TE: deflate, Trailers\r\nX-End: 1\r\n",
			want: http.Header{"Te": {"trailers"}, "X-End": {"1"}},
		},
		{
			name: "TE: trailers is kept when Connection lists TE, as a compliant client sends it",
			head: "Connection: TE\r\nTE: trailers\r\nX-End: 1\r\n",
			want: http.Header{"Te": {"trailers"}, "X-End": {"1"}},
		},
		{
			name: "TE without trailers goes",
			head: "TE: gzip\r\nX-End: 1\r\n",
			want: http.Header{"X-End": {"1"}},
		},
		{
			name: "end-to-end headers untouched",
			head: "Accept: */*\r\nX-Multi: 1\r\nX-Multi: 2\r\n",
			want: http.Header{"Accept": {"*/*"}, "X-Multi": {"1", "2"}},
		},
	} {
		r := parseRequest(t, "GET /p HTTP/1.1\r\nHost: svc\r\n"+tc.head+"\r\n")
		out := relay.NewOutRequest(r, "http", "10.0.0.1:8080")
		if !reflect.DeepEqual(out.Header, tc.want) {
			t.Errorf("%s:\ngot  %v\nwant %v", tc.name, out.Header, tc.want)
		}
	}
}

func TestNewOutRequestFields(t *testing.T) {
	r := parseRequest(t, "POST /a/b%2Fc?q=1&r=2 HTTP/1.1\r\nHost: svc.shop\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")
	// HTTP/2 leaves a Host field in the header map.
	r.Header["Host"] = []string{"evil"}
	origURL := *r.URL
	out := relay.NewOutRequest(r, "https", "10.0.0.1:8443")

	if got, want := out.URL.String(), "https://10.0.0.1:8443/a/b%2Fc?q=1&r=2"; got != want {
		t.Errorf("URL = %s, want %s", got, want)
	}
	if out.Host != "svc.shop" || out.Method != "POST" || out.RequestURI != "" || out.Close || out.TransferEncoding != nil {
		t.Errorf("Host %q Method %q RequestURI %q Close %v TransferEncoding %v; want svc.shop, POST, empty, false, nil",
			out.Host, out.Method, out.RequestURI, out.Close, out.TransferEncoding)
	}
	if _, ok := out.Header["Host"]; ok {
		t.Errorf("a Host header field went through: %v", out.Header)
	}
	if *r.URL != origURL {
		t.Errorf("the server request's URL changed to %v", r.URL)
	}
	if out.Body != r.Body || !reflect.DeepEqual(out.Trailer, r.Trailer) {
		t.Error("body or trailers not passed through")
	}
	body, err := io.ReadAll(out.Body)
	if err != nil || string(body) != "abc" {
		t.Errorf("body %q, %v", body, err)
	}
	if got := out.Trailer.Get("X-Sum"); got != "1" {
		t.Errorf("trailer X-Sum = %q after the body, want 1", got)
	}

	// A request without a header map gets one.
	bare := &http.Request{Method: "GET", URL: origURL.JoinPath(), Host: "svc"}
	if out := relay.NewOutRequest(bare, "http", "h"); out.Header == nil {
		t.Error("NewOutRequest left a nil header map")
	}
}

// A front proxy on loopback that forwards with NewOutRequest and answers
// with CopyResponse; copyErrs receives CopyResponse's result.
func startProxy(t testing.TB, backend string) (addr string, copyErrs chan error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	copyErrs = make(chan error, 100)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := tr.RoundTrip(relay.NewOutRequest(r, "http", backend))
		if err != nil {
			relay.PlainError(w, http.StatusBadGateway, "upstream: "+err.Error()+"\n")
			return
		}
		defer resp.Body.Close()
		copyErrs <- relay.CopyResponse(w, r, resp)
	}))
	t.Cleanup(front.Close)
	return front.Listener.Addr().String(), copyErrs
}

// startProxyH2C is startProxy serving callers over HTTP/2 with prior
// knowledge.
func startProxyH2C(t testing.TB, backend string) (addr string, copyErrs chan error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	copyErrs = make(chan error, 100)
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := tr.RoundTrip(relay.NewOutRequest(r, "http", backend))
		if err != nil {
			relay.PlainError(w, http.StatusBadGateway, "upstream: "+err.Error()+"\n")
			return
		}
		defer resp.Body.Close()
		copyErrs <- relay.CopyResponse(w, r, resp)
	}))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	front.Config.Protocols = &p
	front.Start()
	t.Cleanup(front.Close)
	return front.Listener.Addr().String(), copyErrs
}

// Over real connections: the app behind the proxy never sees the caller's
// hop-by-hop headers, and sees everything else.
func TestHopHeadersStrippedEndToEnd(t *testing.T) {
	seen := make(chan *http.Request, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
	}))
	t.Cleanup(app.Close)
	front, _ := startProxy(t, app.Listener.Addr().String())
	resp, _ := rawExchange(t, front, "GET /path?q=1 HTTP/1.1\r\nHost: svc.shop\r\n"+
		"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic eA==\r\nTE: trailers\r\nUpgrade: h2c\r\nX-End: kept\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := <-seen
	for _, k := range []string{"X-Private", "Keep-Alive", "Proxy-Authorization", "Upgrade"} {
		if v, ok := r.Header[k]; ok {
			t.Errorf("app saw %s: %q", k, v)
		}
	}
	if got := r.Header.Get("Connection"); strings.Contains(strings.ToLower(got), "x-private") {
		t.Errorf("app saw Connection: %q", got)
	}
	if got := r.Header.Get("Te"); got != "trailers" {
		t.Errorf("app saw TE %q, want trailers", got)
	}
	if got := r.Header.Get("X-End"); got != "kept" {
		t.Errorf("app saw X-End %q, want kept", got)
	}
	if r.Host != "svc.shop" || r.URL.RequestURI() != "/path?q=1" {
		t.Errorf("app saw Host %q target %q, want svc.shop /path?q=1", r.Host, r.URL.RequestURI())
	}
}

func TestCopyResponseHeaders(t *testing.T) {
	backend := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 203 Non-Authoritative Information\r\n"+
			"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"+
			"X-End: e\r\nX-End: f\r\nContent-Length: 5\r\n\r\nhello")
	})
	front, copyErrs := startProxy(t, backend)
	resp, body := rawExchange(t, front, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if err := <-copyErrs; err != nil {
		t.Fatalf("CopyResponse = %v", err)
	}
	if resp.StatusCode != 203 || body != "hello" {
		t.Fatalf("got %d %q, want 203 hello", resp.StatusCode, body)
	}
	if got := resp.Header.Values("X-End"); !slices.Equal(got, []string{"e", "f"}) {
		t.Errorf("X-End = %q, want [e f]", got)
	}
	// Neither the upstream's hop headers nor headers the proxy's own
	// server would invent (a sniffed Content-Type, a Date) reach the caller.
	for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authenticate", "Content-Type", "Date"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("caller saw %s: %q", k, v)
		}
	}
}

// Trailers reach the caller whether the upstream announced them or not
// (gRPC sends grpc-status unannounced).
func TestCopyResponseTrailers(t *testing.T) {
	big := strings.Repeat("b", 1<<20)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/announced":
			w.Header().Set("Trailer", "X-Checksum")
			_, _ = io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
			w.Header().Set("X-Checksum", "abc")
		case "/unannounced", "/unannounced-big":
			body := "body"
			if r.URL.Path == "/unannounced-big" {
				body = big
			}
			_, _ = io.WriteString(w, body)
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
		}
	}))
	t.Cleanup(app.Close)
	front, copyErrs := startProxy(t, app.Listener.Addr().String())
	frontH2C, copyErrsH2C := startProxyH2C(t, app.Listener.Addr().String())
	h1 := testutil.HTTPClient(t)
	h2c := testutil.H2CClient(t)
	grpcTrailers := http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"ok"}}
	for _, tc := range []struct {
		name     string
		client   *http.Client
		front    string
		copyErrs chan error
		path     string
		body     string
		trailer  http.Header
	}{
		{"http/1.1 announced", h1, front, copyErrs, "/announced", "part1part2", http.Header{"X-Checksum": {"abc"}}},
		{"http/1.1 unannounced, streamed body", h1, front, copyErrs, "/unannounced-big", big, grpcTrailers},
		{"http/1.1 unannounced, body in one read", h1, front, copyErrs, "/unannounced", "body", grpcTrailers},
		{"h2c announced", h2c, frontH2C, copyErrsH2C, "/announced", "part1part2", http.Header{"X-Checksum": {"abc"}}},
		{"h2c unannounced", h2c, frontH2C, copyErrsH2C, "/unannounced", "body", grpcTrailers},
	} {
		for range 20 { // whether a small body arrives in one read is timing
			copyTrailerCase(t, tc.client, tc.front, tc.copyErrs, tc.name, tc.path, tc.body, tc.trailer)
		}
	}
}

// copyTrailerCase gets path through front and checks the body, the
// trailers and what CopyResponse returned.
func copyTrailerCase(t *testing.T, client *http.Client, front string, copyErrs chan error, name, path, wantBody string, trailer http.Header) {
	t.Helper()
	resp, err := client.Get("http://" + front + path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != wantBody {
		t.Errorf("%s: body of %d bytes, %v; want %d", name, len(body), err, len(wantBody))
	}
	if err := <-copyErrs; err != nil {
		t.Errorf("%s: CopyResponse = %v", name, err)
	}
	if !reflect.DeepEqual(resp.Trailer, trailer) {
		t.Fatalf("%s: trailers %v, want %v", name, resp.Trailer, trailer)
	}
}

func TestCopyResponseUpstreamBodyCutShort(t *testing.T) {
	backend := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
	})
	front, copyErrs := startProxy(t, backend)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("caller read a complete body %q from a cut-short upstream", body)
	}
	var ue *relay.UpstreamBodyError
	if err := <-copyErrs; !errors.As(err, &ue) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("CopyResponse = %v, want an *UpstreamBodyError wrapping io.ErrUnexpectedEOF", err)
	}
}

// A caller that leaves mid-response is ErrClientGone, whether the failed
// write ends the copy (an upstream request that outlives the caller's) or
// the upstream read the caller's canceled context ended.
func TestCopyResponseClientGone(t *testing.T) {
	for _, detached := range []bool{true, false} {
		t.Run(fmt.Sprintf("upstream request detached=%v", detached), func(t *testing.T) { copyResponseClientGone(t, detached) })
	}
}

func copyResponseClientGone(t *testing.T, detached bool) {
	backend := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := "4000\r\n" + strings.Repeat("x", 0x4000) + "\r\n"
		for i := 0; ; i++ {
			if _, err := io.WriteString(c, chunk); err != nil {
				return // the proxy closed its side
			}
			if i >= 4 {
				// Then a trickle: the copy waits in the upstream read
				// when the caller leaves.
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	copyErrs := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := relay.NewOutRequest(r, "http", backend)
		if detached {
			out = out.WithContext(context.WithoutCancel(r.Context()))
		}
		resp, err := tr.RoundTrip(out)
		if err != nil {
			copyErrs <- err
			return
		}
		defer resp.Body.Close()
		copyErrs <- relay.CopyResponse(w, r, resp)
	}))
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<16)); err != nil {
		t.Fatalf("read the start of the stream: %v", err)
	}
	c.Close()
	select {
	case err := <-copyErrs:
		if !errors.Is(err, relay.ErrClientGone) {
			t.Fatalf("CopyResponse = %v, want ErrClientGone", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("CopyResponse kept streaming to a caller that left")
	}
}

func TestUpgradeType(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", "websocket"},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", "h2c"},
		{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", ""},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n", ""},
		{"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", ""},
	} {
		if got := relay.UpgradeType(parseRequest(t, tc.raw)); got != tc.want {
			t.Errorf("UpgradeType(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
	h2 := parseRequest(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	h2.ProtoMajor, h2.ProtoMinor = 2, 0
	if got := relay.UpgradeType(h2); got != "" {
		t.Errorf("UpgradeType of an HTTP/2 request = %q, want empty", got)
	}
}

func TestBodyless(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	} {
		if got := relay.Bodyless(parseRequest(t, tc.raw)); got != tc.want {
			t.Errorf("Bodyless(%q) = %v, want %v", tc.raw, got, tc.want)
		}
	}
	if !relay.Bodyless(&http.Request{Body: http.NoBody, ContentLength: -1}) {
		t.Error("Bodyless(NoBody) = false")
	}
}
