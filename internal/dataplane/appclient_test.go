package dataplane_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil"
)

// rawApp serves HTTP/1.1 by hand so a test can answer in ways a Go server
// would not: close a keep-alive connection after one response, send 1xx
// responses, or delimit a body by closing.
type rawApp struct {
	addr  string
	conns atomic.Int64
}

func startRawApp(t *testing.T, respond func(n int64, req *http.Request, w *bufio.Writer) (keepOpen bool)) *rawApp {
	t.Helper()
	a := &rawApp{}
	l := listen(t)
	t.Cleanup(func() { l.Close() })
	a.addr = l.Addr().String()
	var requests atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer c.Close()
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					keep := respond(requests.Add(1), req, bw)
					_ = bw.Flush()
					if !keep {
						return
					}
				}
			}()
		}
	}()
	return a
}

func TestAppClosesKeepAliveConnection(t *testing.T) {
	// Every response claims keep-alive, then the app closes the
	// connection: the pooled connection is dead when reused.
	app := startRawApp(t, func(n int64, req *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	m := newMesh(t, meshOptions{appAddr: app.addr})
	c := testutil.HTTPClient(t)
	for i := 0; i < 5; i++ {
		resp, body := testutil.Get(t, c, m.url("/"))
		if resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("GET %d: %d %q, want 200 ok (replayed on a fresh connection)", i, resp.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond) // let the close arrive
	}
	if got := app.conns.Load(); got < 5 {
		t.Errorf("app saw %d connections, want one per request", got)
	}
}

func TestAppResponseShapes(t *testing.T) {
	app := startRawApp(t, func(n int64, req *http.Request, w *bufio.Writer) bool {
		switch req.URL.Path {
		case "/early-hints":
			_, _ = w.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints")
			return true
		case "/until-close":
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\n\r\nthe body ends when the connection does")
			return false
		case "/chunked":
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n")
			return true
		case "/close":
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose")
			return false
		}
		_, _ = w.WriteString("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	m := newMesh(t, meshOptions{appAddr: app.addr})
	for _, c := range []*http.Client{testutil.HTTPClient(t), testutil.H2CClient(t)} {
		for _, tc := range []struct{ path, body string }{
			{"/early-hints", "hints"},
			{"/until-close", "the body ends when the connection does"},
			{"/chunked", "hello world"},
			{"/close", "close"},
			{"/early-hints", "hints"},
		} {
			resp, body := testutil.Get(t, c, m.url(tc.path))
			if resp.StatusCode != http.StatusOK || body != tc.body {
				t.Errorf("%s %s: %d %q, want 200 %q", resp.Proto, tc.path, resp.StatusCode, body, tc.body)
			}
			if tc.path == "/chunked" && resp.Trailer.Get("X-Sum") != "11" {
				t.Errorf("%s %s: trailer X-Sum %q, want 11", resp.Proto, tc.path, resp.Trailer.Get("X-Sum"))
			}
			if got := resp.Header.Get("Connection"); got != "" {
				t.Errorf("%s %s: hop-by-hop Connection %q reached the client", resp.Proto, tc.path, got)
			}
		}
	}
}

// TestClientCancelReachesApp: when the caller gives up, the app's request
// is canceled too (its connection closed), not left running.
func TestClientCancelReachesApp(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	})
	m := newMesh(t, meshOptions{app: app})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.url("/wait"), nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := testutil.HTTPClient(t).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the app's request was not canceled after the caller gave up")
	}
	if err := <-errc; err == nil {
		t.Error("client request succeeded, want it canceled")
	}
}

// TestIdleConnectionCheckedBeforeReuse: a request that may not be replayed
// (a POST) must not land on a pooled connection the app closed while it
// sat idle; the pool checks connections idle for over a second.
func TestIdleConnectionCheckedBeforeReuse(t *testing.T) {
	app := startRawApp(t, func(n int64, req *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	m := newMesh(t, meshOptions{appAddr: app.addr})
	c := testutil.HTTPClient(t)
	if resp, _ := testutil.Get(t, c, m.url("/")); resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: %d", resp.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, m.url("/no-body"), nil)
	if resp, body := testutil.Do(t, c, req); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("bodyless POST after the app closed the idle connection: %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestBodylessRequestFraming: what the app receives for bodyless requests
// on the fast path is framed as net/http would frame it.
func TestBodylessRequestFraming(t *testing.T) {
	seen := make(chan string, 10)
	app := startRawApp(t, func(n int64, req *http.Request, w *bufio.Writer) bool {
		seen <- req.Method + " cl=" + req.Header.Get("Content-Length") + " n=" + string(rune('0'+len(req.Header.Values("Content-Length")))) + " ua=" + req.Header.Get("User-Agent")
		_, _ = w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
		return true
	})
	m := newMesh(t, meshOptions{appAddr: app.addr})
	c := testutil.HTTPClient(t)
	for _, tc := range []struct{ method, want string }{
		{http.MethodGet, "GET cl= n=0 ua=test-agent"},
		{http.MethodPost, "POST cl=0 n=1 ua=test-agent"},
		{http.MethodDelete, "DELETE cl=0 n=1 ua=test-agent"},
	} {
		req, _ := http.NewRequest(tc.method, m.url("/"), nil)
		req.Header.Set("User-Agent", "test-agent")
		if resp, _ := testutil.Do(t, c, req); resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: status %d", tc.method, resp.StatusCode)
		}
		if got := <-seen; got != tc.want {
			t.Errorf("%s: app saw %q, want %q", tc.method, got, tc.want)
		}
	}
}
