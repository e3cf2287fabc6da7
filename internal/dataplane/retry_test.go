package dataplane_test

import (
	"io"
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

// addEndpoint starts another catalog proxy in front of app and returns
// its inbound address.
func addEndpoint(t *testing.T, m *mesh, app http.Handler, h2c bool) string {
	t.Helper()
	appAddr := startHTTPApp(t, app, h2c)
	return addEndpointAt(t, m, appAddr)
}

func addEndpointAt(t *testing.T, m *mesh, appAddr string) string {
	t.Helper()
	l := listen(t)
	in := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get,
		Service: "catalog", Namespace: "shop", Protocol: m.opts.protocol, AppAddr: appAddr,
		Logger: m.logs.Logger.With("proxy", "server2"),
	})
	serve(t, "inbound 2", func() error { return in.Serve(l) })
	t.Cleanup(func() { shutdown(t, in.Shutdown) })
	return l.Addr().String()
}

// setTraffic gives catalog.shop the endpoints addrs and the policy tp.
func setTraffic(m *mesh, tp *meshconfig.TrafficPolicy, addrs ...string) {
	snap := *m.snap.get()
	svc := service("catalog", "shop", m.opts.protocol, []spiffeid.ID{catalogID}, addrs...)
	svc.Traffic = tp
	snap.Services = map[string]*meshconfig.Service{svc.Key(): svc}
	m.snap.set(&snap)
}

func retryPolicy(attempts int, on meshconfig.RetryOn, ratio float64, minPerSecond int) *meshconfig.TrafficPolicy {
	return &meshconfig.TrafficPolicy{Ref: "shop/catalog", Retry: &meshconfig.RetryPolicy{
		Attempts: attempts, On: on, BudgetRatio: ratio, BudgetMinPerSecond: minPerSecond,
	}}
}

// failing answers every request with code, counting them.
func failing(code int, n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "down", code)
	})
}

// paths are the outbound HTTP/1.1 paths: the fast path (an upstream
// listener) and net/http (the HTTP proxy port).
func paths(t *testing.T, m *mesh) []struct {
	name string
	c    *http.Client
	url  string
} {
	tr := &http.Transport{Proxy: http.ProxyURL(mustParseURL(t, "http://"+m.proxyAddr)), MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"fast", testutil.HTTPClient(t), m.url("/")},
		{"nethttp", &http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://catalog.shop/"},
	}
}

// load sends n requests from workers goroutines; it returns the status
// counts.
func retryLoad(t *testing.T, c *http.Client, n, workers int, mk func() *http.Request) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := c.Do(mk())
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes
}

func retryGet(url string) func() *http.Request {
	return func() *http.Request { r, _ := http.NewRequest(http.MethodGet, url, nil); return r }
}

func TestRetriesHide503Endpoint(t *testing.T) {
	m := newMesh(t, meshOptions{})
	var bad atomic.Int64
	badAddr := addEndpoint(t, m, failing(503, &bad), false)
	// Round robin sends half the first tries to the 503 endpoint: a
	// budget of 100% lets every one of them retry.
	setTraffic(m, retryPolicy(2, meshconfig.Retry5xx, 1, 10), badAddr, m.inboundAddr)
	for _, p := range paths(t, m) {
		t.Run(p.name, func(t *testing.T) {
			before := bad.Load()
			codes := retryLoad(t, p.c, 300, 8, retryGet(p.url))
			if codes[200] != 300 {
				t.Errorf("got %v, want 300 × 200", codes)
			}
			if bad.Load() == before {
				t.Errorf("the 503 endpoint saw no request: nothing was retried")
			}
			t.Logf("%s: 300 requests, %d reached the 503 endpoint and were retried", p.name, bad.Load()-before)
		})
	}
}

func TestRetryBudgetUnderTotalFailure(t *testing.T) {
	for _, path := range []string{"fast", "nethttp"} {
		t.Run(path, func(t *testing.T) {
			var hits atomic.Int64
			m := newMesh(t, meshOptions{app: failing(503, &hits)})
			other := addEndpoint(t, m, failing(503, &hits), false)
			setTraffic(m, retryPolicy(3, meshconfig.Retry5xx, 0.2, 10), m.inboundAddr, other)
			var p struct {
				c   *http.Client
				url string
			}
			for _, q := range paths(t, m) {
				if q.name == path {
					p.c, p.url = q.c, q.url
				}
			}
			const secs = 3
			var sent atomic.Int64
			var mu sync.Mutex
			codes := map[int]int{}
			start := time.Now()
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(start) < secs*time.Second {
						sent.Add(1)
						resp, err := p.c.Get(p.url)
						code := 0
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							code = resp.StatusCode
						}
						mu.Lock()
						codes[code]++
						mu.Unlock()
						time.Sleep(2 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			n, h := sent.Load(), hits.Load()
			retries := h - n
			// The budget grants 10 a second of its life, counted in
			// whole clock seconds: a run of 3.0x s touches up to 5 of
			// them (+2 s of slack). Plus 20% of the requests.
			allowed := 0.2*float64(n) + 10*(elapsed.Seconds()+2)
			t.Logf("%s: %d requests in %v, %d reached the apps: %d retries, budget %.0f; codes %v", path, n, elapsed, h, retries, allowed, codes)
			if codes[503] != int(n) {
				t.Errorf("codes %v, want all %d 503 (the apps' answer)", codes, n)
			}
			if float64(retries) > allowed || retries <= 0 {
				t.Errorf("%d retries, want 1..%.0f", retries, allowed)
			}
			skipped := metric(t, m.clientMetrics, "trellis_retries_skipped_total", map[string]string{"destination_service": "catalog", "reason": "budget"})
			counted := metric(t, m.clientMetrics, "trellis_retries_total", map[string]string{"destination_service": "catalog"})
			if skipped == 0 || int64(counted) != retries {
				t.Errorf("metrics: %v retries skipped, %v retries counted; want > 0 and %d", skipped, counted, retries)
			}
		})
	}
}

func TestTimeoutAnswers504NamingThePolicy(t *testing.T) {
	m := newMesh(t, meshOptions{app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})})
	setTraffic(m, &meshconfig.TrafficPolicy{Ref: "shop/catalog", Timeout: 200 * time.Millisecond}, m.inboundAddr)
	for _, p := range paths(t, m) {
		t.Run(p.name, func(t *testing.T) {
			for i := range 5 {
				start := time.Now()
				resp, body := testutil.Get(t, p.c, p.url)
				took := time.Since(start)
				if resp.StatusCode != 504 || !strings.Contains(body, "timeout of TrafficPolicy shop/catalog (200ms) expired") ||
					resp.Header.Get("X-Trellis-Timeout-By") != "shop/catalog" {
					t.Errorf("%d: got %d %q %v", i, resp.StatusCode, body, resp.Header)
				}
				if took < 200*time.Millisecond || took > 600*time.Millisecond {
					t.Errorf("%d: answered after %v, want 200ms + up to 400ms", i, took)
				}
			}
		})
	}
}

func TestPerTryTimeoutRetriesElsewhere(t *testing.T) {
	m := newMesh(t, meshOptions{})
	slow := addEndpoint(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}), false)
	tp := retryPolicy(2, meshconfig.Retry5xx, 1, 50)
	// Well above what the fast endpoint takes on a loaded machine: a try
	// there that timed out would send the next one back to the slow one.
	tp.Retry.PerTryTimeout = 300 * time.Millisecond
	setTraffic(m, tp, slow, m.inboundAddr)
	for _, p := range paths(t, m) {
		t.Run(p.name, func(t *testing.T) {
			codes := retryLoad(t, p.c, 200, 16, retryGet(p.url))
			if codes[200] != 200 {
				t.Errorf("got %v, want 200 × 200", codes)
			}
		})
	}
	if n := metric(t, m.clientMetrics, "trellis_timeouts_total", map[string]string{"destination_service": "catalog", "kind": "per_try"}); n == 0 {
		t.Errorf("no per-try timeout counted")
	}
}

func TestRetryNotForPOST(t *testing.T) {
	var hits atomic.Int64
	m := newMesh(t, meshOptions{app: failing(503, &hits)})
	for _, nonIdem := range []bool{false, true} {
		tp := retryPolicy(2, meshconfig.Retry5xx, 1, 100)
		tp.Retry.NonIdempotent = nonIdem
		setTraffic(m, tp, m.inboundAddr)
		for _, p := range paths(t, m) {
			before := hits.Load()
			const n = 50
			codes := retryLoad(t, p.c, n, 4, func() *http.Request {
				r, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader("order=1"))
				return r
			})
			want := int64(n)
			if nonIdem {
				want = 3 * n
			}
			if got := hits.Load() - before; codes[503] != n || got != want {
				t.Errorf("%s nonIdempotent=%v: codes %v, the app saw %d, want %d × 503 and %d", p.name, nonIdem, codes, got, n, want)
			}
		}
	}
}
