package dataplane

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// FuzzFastVsNetHTTP sends the same bytes to two inbound proxies in front
// of one app: one with the HTTP/1.1 fast path, one whose fast path hands
// every request to net/http. Whatever the bytes, the app must receive the
// same requests from both, or nothing from one of them: the fast path
// may refuse what net/http takes (and the reverse), but neither may hand
// the app a request the other would have delivered differently (another
// method, target, header set or body: a smuggling or policy-bypass
// vector).
func FuzzFastVsNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET /items HTTP/1.1\r\nHost: catalog.shop\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"get /public/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /public/..%5cadmin HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /public/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a/../b//c HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: forged\r\nX-Spiffe-Id: forged\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Custom\r\nX-Custom: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX:  a \r\n\tfolded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	// One app behind each proxy, so a request one path delivers late
	// can never be taken for the other path's.
	apps := []*diffApp{{}, {}}
	addrs := []string{
		startDiffInbound(f, startDiffApp(f, apps[0]), false),
		startDiffInbound(f, startDiffApp(f, apps[1]), true),
	}
	// The harness itself: a plain request reaches the app through both.
	for i, addr := range addrs {
		apps[i].take()
		sendAndDrain(f, addr, []byte("GET /check HTTP/1.1\r\nHost: x\r\n\r\n"))
		if got := apps[i].take(); len(got) != 1 || !strings.HasPrefix(got[0], "GET /check ") {
			f.Fatalf("a plain GET through %s reached the app as %q, want once", addr, got)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := make([][]string, 2)
		for i, addr := range addrs {
			apps[i].take()
			sendAndDrain(t, addr, in)
			got[i] = apps[i].take()
		}
		if len(got[0]) == 0 || len(got[1]) == 0 {
			return // one path refused: allowed
		}
		n := min(len(got[0]), len(got[1]))
		for i := range n {
			if got[0][i] != got[1][i] {
				t.Fatalf("request %d reached the app differently:\nfast path:\n%s\nnet/http path:\n%s", i, got[0][i], got[1][i])
			}
		}
	})
}

// diffApp records each request it serves in a comparable form: method,
// target, host, the header fields (minus framing, which each path may
// choose), and the body.
type diffApp struct {
	mu   sync.Mutex
	seen []string
}

func (a *diffApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s host=%q body=%q err=%v\n", r.Method, r.RequestURI, r.Host, body, err != nil)
	var keys []string
	for k := range r.Header {
		switch k {
		case "Content-Length", "Transfer-Encoding", "User-Agent", "Accept-Encoding":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %q\n", k, r.Header[k])
	}
	a.mu.Lock()
	a.seen = append(a.seen, b.String())
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (a *diffApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}

func startDiffApp(f *testing.F, h http.Handler) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	f.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// startDiffInbound serves a PERMISSIVE inbound (plaintext callers, every
// call allowed); netHTTPOnly hands every request to net/http.
func startDiffInbound(f *testing.F, appAddr string, netHTTPOnly bool) string {
	snap := &meshconfig.Snapshot{Version: "1", MTLSMode: "PERMISSIVE", AuthzDefault: "allow", Services: map[string]*meshconfig.Service{}}
	in := NewInbound(DataPlaneConfig{
		Snapshot: func() *meshconfig.Snapshot { return snap }, Service: "catalog", Namespace: "shop", AppAddr: appAddr,
		Limits: limits.Limits{BodyIdleTimeout: time.Second},
	})
	if netHTTPOnly {
		in.fast.accept = func(*h1.Head) bool { return false }
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = in.Serve(l) }()
	f.Cleanup(func() { _ = in.Shutdown(f.Context()) })
	return l.Addr().String()
}

// sendAndDrain writes b and reads what comes back until the proxy closes
// the connection or stays silent for quietFor: every request b holds has
// then been served or refused. (A half-close would be simpler, but
// net/http takes it for a caller gone and cancels its requests.)
func sendAndDrain(t testing.TB, addr string, b []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(b); err != nil {
		return
	}
	const quietFor = 150 * time.Millisecond
	end := time.Now().Add(3 * time.Second)
	buf := make([]byte, 4096)
	for time.Now().Before(end) {
		_ = c.SetReadDeadline(time.Now().Add(quietFor))
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}
