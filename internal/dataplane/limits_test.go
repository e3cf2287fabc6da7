package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/testutil"
)

// Slow and large requests: what one request or caller can hold is
// bounded, on the fast path and the net/http path.

// blockingApp holds every request until release is closed, counting the
// requests in its handler.
type blockingApp struct {
	inFlight, max atomic.Int64
	release       chan struct{}
}

func (a *blockingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for m := a.max.Load(); n > m && !a.max.CompareAndSwap(m, n); m = a.max.Load() {
	}
	_, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		return // the proxy ended a stalled body
	}
	if r.URL.Path != "/fast" {
		<-a.release
	}
	_, _ = io.WriteString(w, "ok")
}

// stalledRequest sends a request head and part of its body, then waits
// for the answer without sending the rest.
func stalledRequest(t *testing.T, addr, target, head, partial string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "POST "+target+" HTTP/1.1\r\nHost: catalog.shop\r\n"+head+"\r\n"+partial); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

func TestBodyIdleTimeoutEndsStalledBodies(t *testing.T) {
	app := &blockingApp{release: make(chan struct{})}
	close(app.release)
	m := newMesh(t, meshOptions{app: app, limits: limits.Limits{BodyIdleTimeout: 300 * time.Millisecond}})
	bodies := []struct{ head, partial string }{
		{"Content-Length: 10\r\n", "abc"},
		{"Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n"},
	}
	vias := map[string]func(target string) (string, string){
		"upstream (fast path)": func(target string) (string, string) { return m.upstreamAddr, target },
		"HTTP proxy port (net/http path)": func(target string) (string, string) {
			return m.proxyAddr, "http://catalog.shop" + target
		},
	}
	const stalled = 30
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for name, via := range vias {
		for _, b := range bodies {
			for i := range stalled {
				wg.Add(1)
				go func() {
					defer wg.Done()
					addr, target := via(fmt.Sprintf("/slow/%d", i))
					code, body := stalledRequest(t, addr, target, b.head, b.partial)
					if code != http.StatusRequestTimeout || !strings.Contains(body, "--body-idle-timeout") {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s %q: %d %q", name, b.head, code, body))
						mu.Unlock()
					}
				}()
			}
		}
	}
	// Ordinary requests go on meanwhile, with no failure.
	c := testutil.HTTPClient(t)
	for i := range 200 {
		resp, err := c.Post(m.url("/fast"), "text/plain", strings.NewReader(fmt.Sprintf("body %d", i)))
		if err != nil {
			t.Fatalf("request %d beside stalled bodies: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d beside stalled bodies: %d", i, resp.StatusCode)
		}
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d stalled bodies not ended with 408; first: %s; last: %s", len(failures), stalled*len(bodies)*len(vias), failures[0], failures[len(failures)-1])
	}
	// Every app connection a stalled body held is closed.
	testutil.Eventually(t, "the app's handlers of stalled bodies to end", func() bool { return app.inFlight.Load() == 0 })
	if got := metric(t, m.serverMetrics, "trellis_inbound_refused_requests_total", map[string]string{"reason": "body_idle"}); got != stalled*float64(len(bodies)*len(vias)) {
		t.Errorf("trellis_inbound_refused_requests_total{reason=body_idle} = %v, want %d", got, stalled*len(bodies)*len(vias))
	}
}

// burst sends n concurrent GETs to path through url and returns the
// count of each status and one body per status.
func burst(t *testing.T, c *http.Client, url string, n int) (map[int]int, map[int]string) {
	var mu sync.Mutex
	codes, bodies := map[int]int{}, map[int]string{}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(url)
			code, body := 0, ""
			if err != nil {
				body = err.Error()
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, body = resp.StatusCode, string(b)
			}
			mu.Lock()
			codes[code]++
			bodies[code] = body
			mu.Unlock()
		}()
	}
	wg.Wait()
	return codes, bodies
}

func TestAppGateCapsRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name               string
		limits             limits.Limits
		admitted, refused  int
		refusedMsg, reason string
	}{
		{"app cap and queue", limits.Limits{AppMaxRequests: 8, AppMaxPending: 4, CallerMaxRequests: 100}, 12, 28, "app busy", "app_busy"},
		{"caller cap", limits.Limits{AppMaxRequests: 100, CallerMaxRequests: 6}, 6, 34, "--caller-max-requests 6", "caller_busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := &blockingApp{}
			m := newMesh(t, meshOptions{app: app, limits: tc.limits})
			tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 0, Proxy: http.ProxyURL(mustParseURL(t, "http://"+m.proxyAddr))}
			t.Cleanup(tr.CloseIdleConnections)
			viaProxy := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			const rounds, n = 3, 40
			for round := range rounds {
				for vi, via := range []struct {
					name string
					c    *http.Client
					url  string
				}{{"fast path", testutil.HTTPClient(t), m.url("/held")}, {"HTTP proxy port", viaProxy, "http://catalog.shop/held"}} {
					app.release = make(chan struct{})
					app.max.Store(0)
					done := make(chan struct{})
					var codes map[int]int
					var bodies map[int]string
					go func() {
						defer close(done)
						codes, bodies = burst(t, via.c, via.url, n)
					}()
					// The app holds what it admitted; release it once
					// every other request has been answered or queued.
					testutil.Eventually(t, "the app to hold its admitted requests", func() bool {
						return app.inFlight.Load() == int64(min(tc.admitted, tc.limits.AppMaxRequests))
					})
					// Every request beyond the slots and the queue has been
					// refused: the rest wait in the queue.
					want := float64((round*2 + vi + 1) * tc.refused)
					testutil.Eventually(t, "the refusals of this burst", func() bool {
						return metric(t, m.serverMetrics, "trellis_inbound_refused_requests_total", map[string]string{"reason": tc.reason}) == want
					})
					close(app.release)
					<-done
					if codes[200] != tc.admitted || codes[503] != tc.refused {
						t.Errorf("round %d via %s: statuses %v, want %d × 200 and %d × 503", round, via.name, codes, tc.admitted, tc.refused)
					}
					if !strings.Contains(bodies[503], tc.refusedMsg) {
						t.Errorf("round %d via %s: 503 body %q, want it to say %q", round, via.name, bodies[503], tc.refusedMsg)
					}
					if got, limit := app.max.Load(), int64(min(tc.limits.AppMaxRequests, tc.limits.CallerMaxRequests)); got > limit {
						t.Errorf("round %d via %s: %d requests in the app at once, limit %d", round, via.name, got, limit)
					}
				}
			}
			if got := metric(t, m.serverMetrics, "trellis_inbound_refused_requests_total", map[string]string{"reason": tc.reason}); got != float64(rounds*2*tc.refused) {
				t.Errorf("refused_requests{reason=%s} = %v, want %d", tc.reason, got, rounds*2*tc.refused)
			}
		})
	}
}

func TestHeadLimitsOnTheNetHTTPPath(t *testing.T) {
	app := &blockingApp{release: make(chan struct{})}
	close(app.release)
	m := newMesh(t, meshOptions{app: app})
	for _, tc := range []struct {
		name   string
		fields []string
		want   int
		rounds int
	}{
		{"90 fields", headerFields(90), http.StatusOK, 50},
		{"150 fields", headerFields(150), http.StatusRequestHeaderFieldsTooLarge, 50},
		{"a 40 KiB field", []string{"X-Big: " + strings.Repeat("a", 40<<10)}, http.StatusOK, 50},
		// net/http answers a head over MaxHeaderBytes itself and closes
		// half a second later (its reset avoidance): fewer rounds.
		{"a 70 KiB field", []string{"X-Big: " + strings.Repeat("a", 70<<10)}, http.StatusRequestHeaderFieldsTooLarge, 8},
	} {
		for _, via := range screenVias {
			for range tc.rounds {
				if got := sendVia(t, m, via, "GET", "/fast", "HTTP/1.1", tc.fields...); got != tc.want {
					t.Fatalf("%s via %s: %d, want %d", tc.name, via, got, tc.want)
				}
			}
		}
	}
}

// A head with bare-LF line ends is answered 400 at once, not after the
// 30 s header timeout.
func TestBareLFHeadAnsweredAtOnce(t *testing.T) {
	m := newMesh(t, meshOptions{})
	for i := range 100 {
		c, err := net.Dial("tcp", m.upstreamAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET /x HTTP/1.1\nHost: catalog.shop\n\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("request %d: %v (before the 30 s header timeout)", i, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d: %d, want 400", i, resp.StatusCode)
		}
	}
}

// Limits set below the fast path's own (8 KiB, 100 fields) hold on the
// fast path too.
func TestLowerHeadLimitsHoldOnTheFastPath(t *testing.T) {
	m := newMesh(t, meshOptions{limits: limits.Limits{MaxHeaderFields: 10, MaxHeaderBytes: 2048}})
	for _, tc := range []struct {
		name   string
		fields []string
		want   int
	}{
		{"8 fields", headerFields(8), http.StatusOK},
		{"20 fields", headerFields(20), http.StatusRequestHeaderFieldsTooLarge},
		{"a 3 KiB field", []string{"X-Big: " + strings.Repeat("a", 3<<10)}, http.StatusRequestHeaderFieldsTooLarge},
	} {
		for range 100 {
			if got := sendVia(t, m, "upstream", "GET", "/x", "HTTP/1.1", tc.fields...); got != tc.want {
				t.Fatalf("%s: %d, want %d", tc.name, got, tc.want)
			}
		}
	}
}

// headerFields is n distinct header lines.
func headerFields(n int) []string {
	var fs []string
	for i := range n {
		fs = append(fs, fmt.Sprintf("X-F%d: v", i))
	}
	return fs
}
