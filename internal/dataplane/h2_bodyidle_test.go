package dataplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// h2cTransport speaks prior-knowledge h2c to an upstream listener.
func h2cTransport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// bodyIdleApp answers /quiet at once and the rest of its body later;
// every other path once its body has ended.
type bodyIdleApp struct{ inFlight atomic.Int64 }

func (a *bodyIdleApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	if r.URL.Path == "/quiet" {
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
	}
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		return // the proxy ended a stalled body
	}
	_, _ = fmt.Fprintf(w, "read %d", n)
}

// TestBodyIdleTimeoutOverTheHTTP2Relay: on the HTTP/2 relay, a stream
// whose request body stalls before its response begins is answered 408
// after --body-idle-timeout and its app stream is reset, while on the
// same connections ordinary requests, bodies that trickle in, and quiet
// streams whose response has begun (a gRPC bidi stream waiting for
// events) go on untouched.
func TestBodyIdleTimeoutOverTheHTTP2Relay(t *testing.T) {
	const idle = 300 * time.Millisecond
	app := &bodyIdleApp{}
	m := newMesh(t, meshOptions{app: app, appH2C: true, protocol: meshconfig.ProtocolHTTP2, limits: limits.Limits{BodyIdleTimeout: idle}})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	url := "http://" + m.upstreamAddr

	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// post sends a body that write produces and returns the answer.
	post := func(path string, write func(w *io.PipeWriter)) (int, string, error) {
		pr, pw := io.Pipe()
		go write(pw)
		req, _ := http.NewRequest("POST", url+path, pr)
		req.Host = "catalog.shop"
		resp, err := c.Do(req)
		if err != nil {
			pw.CloseWithError(err)
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		pw.Close()
		return resp.StatusCode, string(b), err
	}

	const stalled, quiet, trickled = 40, 10, 10
	var wg sync.WaitGroup
	for i := range stalled {
		wg.Go(func() {
			code, body, err := post(fmt.Sprintf("/stalled/%d", i), func(w *io.PipeWriter) {
				_, _ = io.WriteString(w, "abc") // and nothing more
			})
			if err != nil || code != http.StatusRequestTimeout || !strings.Contains(body, "--body-idle-timeout") {
				fail("stalled %d: %d %q %v", i, code, body, err)
			}
		})
	}
	for i := range quiet {
		wg.Go(func() {
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", url+"/quiet", pr)
			req.Host = "catalog.shop"
			go func() { _, _ = io.WriteString(pw, "first") }()
			resp, err := c.Do(req)
			if err != nil {
				fail("quiet %d: %v", i, err)
				pw.CloseWithError(err)
				return
			}
			defer resp.Body.Close()
			// The response began: the caller may now say nothing for
			// several idle timeouts.
			time.Sleep(4 * idle)
			_, _ = io.WriteString(pw, " last")
			pw.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || string(b) != "read 10" {
				fail("quiet %d: %d %q %v", i, resp.StatusCode, b, err)
			}
		})
	}
	for i := range trickled {
		wg.Go(func() {
			code, body, err := post("/trickle", func(w *io.PipeWriter) {
				for range 12 {
					time.Sleep(idle / 3)
					if _, err := io.WriteString(w, "x"); err != nil {
						return
					}
				}
				w.Close()
			})
			if err != nil || code != http.StatusOK || body != "read 12" {
				fail("trickle %d: %d %q %v", i, code, body, err)
			}
		})
	}
	// Ordinary requests go on meanwhile, on the same connections.
	for i := range 300 {
		body := fmt.Sprintf("body %d", i)
		code, got, err := post("/fast", func(w *io.PipeWriter) {
			_, _ = io.WriteString(w, body)
			w.Close()
		})
		if err != nil || code != http.StatusOK || got != fmt.Sprintf("read %d", len(body)) {
			t.Fatalf("request %d beside stalled bodies: %d %q %v", i, code, got, err)
		}
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d failures; first: %s; last: %s", len(failures), failures[0], failures[len(failures)-1])
	}
	// The app's handlers of stalled bodies saw their streams reset.
	testutil.Eventually(t, "the app's handlers of stalled bodies to end", func() bool { return app.inFlight.Load() == 0 })
	if got := metric(t, m.serverMetrics, "trellis_inbound_refused_requests_total", map[string]string{"reason": "body_idle"}); got != stalled {
		t.Errorf("trellis_inbound_refused_requests_total{reason=body_idle} = %v, want %d", got, stalled)
	}
	if got := metric(t, m.serverMetrics, "trellis_requests_total", map[string]string{"direction": "inbound", "response_code": "408"}); got != stalled {
		t.Errorf("trellis_requests_total{direction=inbound,response_code=408} = %v, want %d", got, stalled)
	}
}
