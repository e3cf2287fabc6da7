package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
)

// countingTransport is net/http's Transport to the app, counting what the
// AppClient hands it.
type countingTransport struct {
	http.Transport
	n atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.Transport.RoundTrip(r)
}

func newAppClient(t testing.TB, addr string) (*AppClient, *countingDialer, *countingTransport) {
	t.Helper()
	p, d := newTestPool(t, addr, 8, time.Minute)
	fb := &countingTransport{}
	t.Cleanup(fb.CloseIdleConnections)
	return NewAppClient(p, fb), d, fb
}

func do(t testing.TB, a *AppClient, req *http.Request) (*http.Response, string, error) {
	t.Helper()
	resp, err := a.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

func get(t testing.TB, ctx context.Context, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestAppClientReusesOneConnection(t *testing.T) {
	srv := okServer(t)
	a, d, fb := newAppClient(t, srv.addr)
	for i := range 200 {
		path := fmt.Sprintf("/r%d", i)
		resp, body, err := do(t, a, get(t, context.Background(), http.MethodGet, "http://"+srv.addr+path))
		if err != nil || resp.StatusCode != http.StatusOK || body != path {
			t.Fatalf("request %d: %v %q %v", i, resp, body, err)
		}
	}
	if d.dials.Load() != 1 || srv.conns.Load() != 1 || fb.n.Load() != 0 {
		t.Fatalf("dials %d, app connections %d, fallback requests %d; want 1, 1, 0", d.dials.Load(), srv.conns.Load(), fb.n.Load())
	}
}

// Requests with a body, which may stream both ways, take the fallback
// transport; the pool is not touched.
func TestAppClientBodyGoesToFallback(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		msg := fmt.Sprintf("%s %d", req.Method, req.ContentLength)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		return true
	})
	a, d, fb := newAppClient(t, srv.addr)
	req, err := http.NewRequest(http.MethodPost, "http://"+srv.addr+"/upload", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp, body, err := do(t, a, req)
	if err != nil || resp.StatusCode != http.StatusOK || body != "POST 7" {
		t.Fatalf("POST with a body: %v %q %v; want the app to see 7 bytes", resp, body, err)
	}
	if fb.n.Load() != 1 || d.dials.Load() != 0 {
		t.Fatalf("fallback requests %d, pool dials %d; want 1, 0", fb.n.Load(), d.dials.Load())
	}
}

// A kept-alive connection the app closed while idle fails before any
// response byte: a request that may be sent twice is replayed once on a
// fresh connection; one that may not is not.
func TestAppClientReplayOnClosedKeepAlive(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
		if req.Method != http.MethodHead {
			_, _ = w.WriteString("ok")
		}
		return false // claims keep-alive, then closes
	})
	a, _, _ := newAppClient(t, srv.addr)
	url := "http://" + srv.addr + "/"
	send := func(method string, header http.Header) (string, error) {
		req := get(t, context.Background(), method, url)
		for k, v := range header {
			req.Header[k] = v
		}
		_, body, err := do(t, a, req)
		return body, err
	}
	if body, err := send(http.MethodGet, nil); err != nil || body != "ok" {
		t.Fatalf("first GET: %q, %v", body, err)
	}
	for i, tc := range []struct {
		method    string
		header    http.Header
		wantReply bool
	}{
		{http.MethodGet, nil, true},
		{http.MethodHead, nil, true},
		{http.MethodDelete, http.Header{"Idempotency-Key": {"k1"}}, true},
		{http.MethodPost, http.Header{"X-Idempotency-Key": {"k2"}}, true},
		{http.MethodPost, nil, false},
	} {
		closed := int64(i + 1)
		testutil.Eventually(t, "the app to close the kept-alive connection", func() bool { return srv.closed.Load() == closed })
		conns := srv.conns.Load()
		body, err := send(tc.method, tc.header)
		if !tc.wantReply {
			if err == nil || !errors.Is(err, errNothingRead) {
				t.Errorf("%s without an idempotency key on a dead connection: %q, %v; want errNothingRead, not a replay", tc.method, body, err)
			}
			if got := srv.conns.Load(); got != conns {
				t.Errorf("%s was replayed on a new connection", tc.method)
			}
			continue
		}
		want := "ok"
		if tc.method == http.MethodHead {
			want = ""
		}
		if err != nil || body != want {
			t.Errorf("%s %v on a dead connection: %q, %v; want it replayed", tc.method, tc.header, body, err)
		}
		if got := srv.conns.Load(); got != conns+1 {
			t.Errorf("%s: %d new connections, want 1", tc.method, got-conns)
		}
	}
}

func TestAppClientSkipsInformational(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
		return true
	})
	a, d, _ := newAppClient(t, srv.addr)
	for range 3 {
		resp, body, err := do(t, a, get(t, context.Background(), http.MethodGet, "http://"+srv.addr+"/"))
		if err != nil || resp.StatusCode != http.StatusOK || body != "final" {
			t.Fatalf("got %v %q %v, want 200 final", resp, body, err)
		}
	}
	if d.dials.Load() != 1 {
		t.Errorf("dials = %d, want 1 (the connection stays in step after 1xx)", d.dials.Load())
	}
}

func TestAppClientCancelClosesConnection(t *testing.T) {
	received := make(chan struct{}, 1)
	srv := startRawServer(t, func(req *http.Request, c net.Conn, _ *bufio.Writer) bool {
		received <- struct{}{}
		_, _ = io.Copy(io.Discard, c) // never answers; returns when the proxy closes
		return false
	})
	a, _, _ := newAppClient(t, srv.addr)
	ctx, cancel := context.WithCancel(context.Background())
	req := get(t, ctx, http.MethodGet, "http://"+srv.addr+"/slow")
	errc := make(chan error, 1)
	go func() {
		_, err := a.RoundTrip(req)
		errc <- err
	}()
	<-received
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RoundTrip = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip kept waiting after its context ended")
	}
	testutil.Eventually(t, "the app to see the connection closed", func() bool { return srv.closed.Load() == 1 })
}

// A header value carrying CR or LF is refused before anything reaches the
// app (request smuggling).
func TestAppClientRefusesHeaderInjection(t *testing.T) {
	srv := okServer(t)
	a, _, _ := newAppClient(t, srv.addr)
	for _, tc := range []struct {
		name  string
		setup func(r *http.Request)
	}{
		{"value", func(r *http.Request) { r.Header["X-A"] = []string{"1\r\nX-Injected: 1"} }},
		{"name", func(r *http.Request) { r.Header["X-A\r\nX-Injected"] = []string{"1"} }},
		{"host", func(r *http.Request) { r.Host = "app\r\nX-Injected: 1" }},
	} {
		req := get(t, context.Background(), http.MethodGet, "http://"+srv.addr+"/")
		tc.setup(req)
		if _, err := a.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("%s: RoundTrip = %v, want an invalid header error", tc.name, err)
		}
	}
	testutil.Eventually(t, "the app to see the refused requests' connections closed", func() bool { return srv.closed.Load() == 3 })
	if got := srv.reqs.Load(); got != 0 {
		t.Fatalf("the app received %d requests, want 0", got)
	}
}

// A body read to the end gives the connection back; one abandoned
// half-way, or answered with Connection: close, does not.
func TestAppClientReleasesOnlyFinishedConnections(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		switch req.URL.Path {
		case "/close":
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
			return false
		case "/chunked":
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		case "/nobody":
			_, _ = w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
		default:
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
		}
		return true
	})
	a, d, _ := newAppClient(t, srv.addr)
	url := "http://" + srv.addr
	for _, tc := range []struct {
		path      string
		abandon   bool
		wantDials int64
	}{
		{"/", false, 1},
		{"/chunked", false, 1},
		{"/nobody", false, 1},
		{"/", true, 1},  // abandoned: this connection is closed
		{"/", false, 2}, // so a new one is dialed
		{"/close", false, 2},
		{"/", false, 3},
	} {
		resp, err := a.RoundTrip(get(t, context.Background(), http.MethodGet, url+tc.path))
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if tc.abandon {
			_, _ = resp.Body.Read(make([]byte, 3))
		} else if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatalf("%s: body: %v", tc.path, err)
		}
		resp.Body.Close()
		if got := d.dials.Load(); got != tc.wantDials {
			t.Fatalf("%s (abandoned %v): dials %d, want %d", tc.path, tc.abandon, got, tc.wantDials)
		}
	}
}

func TestAppClientConcurrent(t *testing.T) {
	srv := okServer(t)
	a, d, _ := newAppClient(t, srv.addr)
	const workers, each = 20, 25
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				path := fmt.Sprintf("/w%d/%d", w, i)
				req, _ := http.NewRequest(http.MethodGet, "http://"+srv.addr+path, nil)
				resp, err := a.RoundTrip(req)
				if err != nil {
					t.Errorf("%s: %v", path, err)
					failures.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != path {
					t.Errorf("%s: body %q, %v", path, body, err)
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, workers*each)
	}
	if got := d.dials.Load(); got > workers {
		t.Errorf("dials = %d for %d workers", got, workers)
	}
}
