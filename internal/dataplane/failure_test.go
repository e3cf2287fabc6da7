package dataplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// fast bounds how long a failing call may take: it must not wait for
// anything (loopback refusals are immediate).
const fast = 500 * time.Millisecond

func timedGet(t *testing.T, c *http.Client, url string) (*http.Response, string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, body := testutil.Get(t, c, url)
	return resp, body, time.Since(start)
}

func TestNoEndpointsFails503Fast(t *testing.T) {
	m := newMesh(t, meshOptions{})
	snap := *m.snap.get()
	snap.Services = map[string]*meshconfig.Service{m.svc.Key(): service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID})}
	m.snap.set(&snap)
	resp, body, took := timedGet(t, testutil.HTTPClient(t), m.url("/"))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no healthy endpoints for catalog.shop") || took > fast {
		t.Errorf("got %d %q after %v, want 503 \"no healthy endpoints for catalog.shop\" within %v", resp.StatusCode, body, took, fast)
	}
	m.logs.WaitLog(t, "outbound call refused", "service=catalog.shop", "reason=no_endpoints")
}

func TestEndpointDownFails503Fast(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := testutil.HTTPClient(t)
	if resp, _ := testutil.Get(t, c, m.url("/")); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: status %d", resp.StatusCode)
	}
	// Kill the server proxy: its listener and the pooled HTTP/2
	// connection go away.
	shutdown(t, m.in.Shutdown)
	for i := 0; i < 3; i++ {
		resp, body, took := timedGet(t, c, m.url("/"))
		if resp.StatusCode != http.StatusServiceUnavailable || took > fast {
			t.Errorf("call %d: got %d %q after %v, want 503 within %v", i, resp.StatusCode, body, took, fast)
		}
	}
	m.logs.WaitLog(t, "outbound call failed", "reason=dial", "connection refused")
}

func TestRetryOnAnotherEndpoint(t *testing.T) {
	m := newMesh(t, meshOptions{})
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	snap := *m.snap.get()
	snap.Services = map[string]*meshconfig.Service{m.svc.Key(): service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}, deadAddr, m.inboundAddr)}
	m.snap.set(&snap)
	c := testutil.HTTPClient(t)
	for i := 0; i < 6; i++ {
		resp, body, took := timedGet(t, c, m.url("/"))
		if resp.StatusCode != http.StatusOK || took > fast {
			t.Errorf("GET %d: got %d %q after %v, want 200 (retried on the live endpoint)", i, resp.StatusCode, body, took)
		}
	}
	// A POST with a body is not replayed: it fails or succeeds on its
	// first pick, never hangs.
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest(http.MethodPost, m.url("/"), strings.NewReader("once"))
		start := time.Now()
		resp, _ := testutil.Do(t, c, req)
		if took := time.Since(start); took > fast || (resp.StatusCode != 200 && resp.StatusCode != 503) {
			t.Errorf("POST %d: got %d after %v, want 200 or 503 within %v", i, resp.StatusCode, took, fast)
		}
	}
}

func TestBlackholedEndpointBoundedByDialTimeout(t *testing.T) {
	// A listener that never completes a TLS handshake stands in for an
	// unreachable host: the call must end at the dial timeout.
	hole := listen(t)
	var held sync.WaitGroup
	t.Cleanup(func() { hole.Close(); held.Wait() })
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() { defer held.Done(); _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	m := newMesh(t, meshOptions{})
	out := dataplane.NewOutbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(frontendID), Snapshot: m.snap.get, DialTimeout: 300 * time.Millisecond, Logger: m.logs.Logger,
	})
	snap := *m.snap.get()
	snap.Services = map[string]*meshconfig.Service{m.svc.Key(): service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}, hole.Addr().String())}
	m.snap.set(&snap)
	l := listen(t)
	serve(t, "upstream", func() error { return out.ServeUpstream(l, m.svc.Key()) })
	t.Cleanup(func() {
		hole.Close()
		shutdown(t, out.Shutdown)
	})
	c := testutil.HTTPClient(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := c.Get("http://" + l.Addr().String() + "/")
			if err != nil {
				t.Errorf("GET: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || time.Since(start) > 2*time.Second {
				t.Errorf("got %d after %v, want 503 within about the 300ms dial timeout", resp.StatusCode, time.Since(start))
			}
		}()
	}
	wg.Wait()
}

func TestNoConfigYet(t *testing.T) {
	m := newMesh(t, meshOptions{})
	m.snap.set(nil)
	resp, body, took := timedGet(t, testutil.HTTPClient(t), m.url("/"))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no mesh configuration") || took > fast {
		t.Errorf("outbound: got %d %q after %v, want a fast 503", resp.StatusCode, body, took)
	}
	c, err := net.Dial("tcp", m.inboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readsNothing(t, c)
	if got := metric(t, m.serverMetrics, "trellis_inbound_rejected_total", map[string]string{"reason": "no_config"}); got != 1 {
		t.Errorf("trellis_inbound_rejected_total{reason=no_config} = %v, want 1", got)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	m := newMesh(t, meshOptions{app: app})
	c := testutil.HTTPClient(t)
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get(m.url("/slow"))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	shutStart := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- m.in.Shutdown(ctx)
	}()
	// Shutdown must wait for the request.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	// New connections are refused meanwhile.
	if c2, err := net.DialTimeout("tcp", m.inboundAddr, time.Second); err == nil {
		c2.Close()
		t.Errorf("inbound still accepts connections during shutdown")
	}
	close(release)
	r := <-res
	if r.err != nil || r.code != http.StatusOK || r.body != "done" {
		t.Errorf("in-flight request: %d %q %v, want 200 \"done\"", r.code, r.body, r.err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Shutdown did not return after the last request finished")
	}
	if took := time.Since(shutStart); took > 5*time.Second {
		t.Errorf("Shutdown took %v", took)
	}
}

func TestShutdownForcesAfterDeadline(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	m := newMesh(t, meshOptions{app: app})
	go func() {
		if resp, err := testutil.HTTPClient(t).Get(m.url("/forever")); err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, "request in flight", func() bool {
		return metric(t, m.serverMetrics, "trellis_authz_decisions_total", nil) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := m.in.Shutdown(ctx)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("Shutdown with a stuck request: %v after %v, want a deadline error soon after 200ms", err, time.Since(start))
	}
}

func TestDrainTimeoutCapsShutdown(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	m := newMesh(t, meshOptions{app: app, drainTimeout: 200 * time.Millisecond})
	go func() {
		if resp, err := testutil.HTTPClient(t).Get(m.url("/forever")); err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, "request in flight", func() bool {
		return metric(t, m.serverMetrics, "trellis_authz_decisions_total", nil) == 1
	})
	start := time.Now()
	err := m.in.Shutdown(context.Background())
	if took := time.Since(start); err == nil || took > 3*time.Second {
		t.Errorf("Shutdown without a deadline but DrainTimeout 200ms: %v after %v, want an error soon after 200ms", err, took)
	}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestConfigPushKeepsConnections: a new snapshot that lists the same
// endpoint keeps using the pooled connections, and a burst of concurrent
// first calls opens at most one connection per call in flight (HTTP/1.1
// callers take the fast path: a keep-alive pool of HTTP/1.1-over-mTLS
// connections, like nginx's upstream keepalive).
func TestConfigPushKeepsConnections(t *testing.T) {
	m := newMesh(t, meshOptions{})
	cl := &countingListener{Listener: listen(t)}
	in := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get,
		Service: "catalog", Namespace: "shop", AppAddr: m.appAddr, Logger: m.logs.Logger,
	})
	serve(t, "inbound", func() error { return in.Serve(cl) })
	t.Cleanup(func() { shutdown(t, in.Shutdown) })
	push := func() {
		snap := *m.snap.get()
		snap.Version += "+"
		snap.Services = map[string]*meshconfig.Service{m.svc.Key(): service("catalog", "shop", meshconfig.ProtocolHTTP, []spiffeid.ID{catalogID}, cl.Addr().String())}
		m.snap.set(&snap)
	}
	push()
	c := testutil.HTTPClient(t)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(m.url("/"))
			if err != nil {
				t.Errorf("GET: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET: status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	first := cl.n.Load()
	if first < 1 || first > 50 {
		t.Errorf("50 concurrent first calls opened %d connections, want 1 to 50", first)
	}
	for i := 0; i < 5; i++ {
		push()
		if resp, _ := testutil.Get(t, c, m.url("/")); resp.StatusCode != http.StatusOK {
			t.Fatalf("after push %d: status %d", i, resp.StatusCode)
		}
	}
	if got := cl.n.Load(); got != first {
		t.Errorf("inbound accepted %d more connections across 5 config pushes, want 0 (connection kept)", got-first)
	}
}

// TestNoCertificateYet: before the proxy holds a certificate, calls fail
// fast with a reason instead of hanging or crashing.
func TestNoCertificateYet(t *testing.T) {
	m := newMesh(t, meshOptions{})
	out := dataplane.NewOutbound(dataplane.DataPlaneConfig{Snapshot: m.snap.get, Logger: m.logs.Logger})
	l := listen(t)
	serve(t, "upstream", func() error { return out.ServeUpstream(l, m.svc.Key()) })
	t.Cleanup(func() { shutdown(t, out.Shutdown) })
	resp, body, took := timedGet(t, testutil.HTTPClient(t), "http://"+l.Addr().String()+"/")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no workload certificate") || took > fast {
		t.Errorf("got %d %q after %v, want a fast 503 naming the missing certificate", resp.StatusCode, body, took)
	}
}
