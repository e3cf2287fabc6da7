package limits

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/testutil"
)

func refused(t testing.TB, m *metrics.Metrics, reason string) float64 {
	t.Helper()
	return testutil.Metric(t, m.Registry(), "trellis_inbound_refused_requests_total", map[string]string{"reason": reason})
}

func TestWithDefaults(t *testing.T) {
	defaults := Limits{
		BodyIdleTimeout:   DefaultBodyIdleTimeout,
		AppMaxRequests:    DefaultAppMaxRequests,
		AppMaxPending:     DefaultAppMaxPending,
		CallerMaxRequests: DefaultCallerMaxRequests,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		MaxHeaderFields:   DefaultMaxHeaderFields,
	}
	set := Limits{
		BodyIdleTimeout:   time.Second,
		AppMaxRequests:    1,
		AppMaxPending:     2,
		CallerMaxRequests: 3,
		MaxHeaderBytes:    4,
		MaxHeaderFields:   5,
	}
	for _, tc := range []struct {
		name    string
		in, out Limits
	}{
		{"zero", Limits{}, defaults},
		{"negative", Limits{BodyIdleTimeout: -1, AppMaxRequests: -1, AppMaxPending: -1, CallerMaxRequests: -1, MaxHeaderBytes: -1, MaxHeaderFields: -1}, defaults},
		{"set", set, set},
		{"partly set", Limits{AppMaxPending: 7}, func() Limits { l := defaults; l.AppMaxPending = 7; return l }()},
	} {
		if got := tc.in.WithDefaults(); got != tc.out {
			t.Errorf("%s: WithDefaults() = %+v, want %+v", tc.name, got, tc.out)
		}
	}
}

func wantRefusal(t testing.TB, r *admission.Refusal, msgPart string) {
	t.Helper()
	if r == nil {
		t.Fatalf("Acquire = nil, want a 503 refusal mentioning %q", msgPart)
	}
	if r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Msg, msgPart) || !strings.HasSuffix(r.Msg, "\n") {
		t.Fatalf("refusal = %d %q, want 503 mentioning %q, ending in a newline", r.Code, r.Msg, msgPart)
	}
}

func TestGateCallerCap(t *testing.T) {
	m := metrics.New()
	g := NewGate(Limits{AppMaxRequests: 10, CallerMaxRequests: 2}.WithDefaults(), m)
	ctx := context.Background()
	for i := range 2 {
		if r := g.Acquire(ctx, "spiffe://trellis.test/ns/shop/sa/a"); r != nil {
			t.Fatalf("Acquire %d for a: %+v", i, r)
		}
	}
	wantRefusal(t, g.Acquire(ctx, "spiffe://trellis.test/ns/shop/sa/a"), "--caller-max-requests 2")
	// Another caller, and plaintext callers, have caps of their own.
	for _, p := range []string{"spiffe://trellis.test/ns/shop/sa/b", "", ""} {
		if r := g.Acquire(ctx, p); r != nil {
			t.Fatalf("Acquire for %q: %+v", p, r)
		}
	}
	wantRefusal(t, g.Acquire(ctx, ""), "--caller-max-requests 2")
	if got := refused(t, m, ReasonCallerBusy); got != 2 {
		t.Errorf("caller_busy refusals = %v, want 2", got)
	}
	g.Release("spiffe://trellis.test/ns/shop/sa/a")
	if r := g.Acquire(ctx, "spiffe://trellis.test/ns/shop/sa/a"); r != nil {
		t.Fatalf("Acquire after a Release: %+v", r)
	}
	if got := len(g.slots); got != 5 {
		t.Errorf("slots taken = %d, want 5 (refusals must not hold one)", got)
	}
	if got := refused(t, m, ReasonAppBusy); got != 0 {
		t.Errorf("app_busy refusals = %v, want 0", got)
	}
}

// The total cap admits AppMaxRequests at once, queues AppMaxPending more,
// refuses the rest at once, and hands a released slot to one waiter.
func TestGateTotalCapAndQueue(t *testing.T) {
	m := metrics.New()
	const inFlight, pending = 2, 3
	g := NewGate(Limits{AppMaxRequests: inFlight, AppMaxPending: pending, CallerMaxRequests: 100}.WithDefaults(), m)
	ctx := context.Background()
	for range inFlight {
		if r := g.Acquire(ctx, "a"); r != nil {
			t.Fatalf("Acquire with free slots: %+v", r)
		}
	}
	results := make(chan *admission.Refusal, pending)
	for range pending {
		go func() { results <- g.Acquire(ctx, "a") }()
	}
	testutil.Eventually(t, "3 requests queued", func() bool { return g.pending.Load() == pending })
	wantRefusal(t, g.Acquire(ctx, "b"), "2 requests in flight")
	wantRefusal(t, g.Acquire(ctx, "b"), "--app-max-pending 3")
	if got := refused(t, m, ReasonAppBusy); got != 2 {
		t.Errorf("app_busy refusals = %v, want 2", got)
	}
	if len(results) != 0 {
		t.Fatalf("%d queued requests admitted with every slot taken", len(results))
	}
	if got := g.caller("b").Load(); got != 0 {
		t.Errorf("caller b counts %d requests after its refusals, want 0", got)
	}
	for left := pending - 1; left >= 0; left-- {
		g.Release("a")
		select {
		case r := <-results:
			if r != nil {
				t.Fatalf("queued request refused: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a released slot did not reach a queued request")
		}
		testutil.Eventually(t, "the admitted request to leave the queue", func() bool { return g.pending.Load() == int64(left) })
		if len(results) != 0 {
			t.Fatalf("one Release admitted %d queued requests", 1+len(results))
		}
		if got := len(g.slots); got != inFlight {
			t.Fatalf("slots taken = %d, want %d", got, inFlight)
		}
	}
	for range inFlight {
		g.Release("a")
	}
	if got := g.caller("a").Load(); got != 0 {
		t.Errorf("caller a counts %d requests after releasing all, want 0", got)
	}
	if got := len(g.slots); got != 0 {
		t.Errorf("slots taken = %d after releasing all, want 0", got)
	}
}

func TestGateQueuedRequestCanceled(t *testing.T) {
	m := metrics.New()
	g := NewGate(Limits{AppMaxRequests: 1, AppMaxPending: 5, CallerMaxRequests: 1}.WithDefaults(), m)
	if r := g.Acquire(context.Background(), "holder"); r != nil {
		t.Fatal(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan *admission.Refusal, 1)
	go func() { result <- g.Acquire(ctx, "waiter") }()
	testutil.Eventually(t, "the request to queue", func() bool { return g.pending.Load() == 1 })
	cancel()
	select {
	case r := <-result:
		wantRefusal(t, r, "app busy")
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled request stayed queued")
	}
	if got := g.pending.Load(); got != 0 {
		t.Errorf("pending = %d after the cancel, want 0", got)
	}
	if got := refused(t, m, ReasonAppBusy); got != 1 {
		t.Errorf("app_busy refusals = %v, want 1", got)
	}
	g.Release("holder")
	// The waiter's per-caller count (cap 1) was given back: it gets in now.
	if r := g.Acquire(context.Background(), "waiter"); r != nil {
		t.Fatalf("Acquire for the canceled caller after a Release: %+v", r)
	}
	if got := len(g.slots); got != 1 {
		t.Errorf("slots taken = %d, want 1 (the canceled request must not hold one)", got)
	}
}

// Many requests through a small gate: never more than AppMaxRequests hold
// a slot, and with a queue long enough none is refused.
func TestGateConcurrentTotalCap(t *testing.T) {
	m := metrics.New()
	const slots, workers, each = 4, 200, 5
	g := NewGate(Limits{AppMaxRequests: slots, AppMaxPending: workers, CallerMaxRequests: workers}.WithDefaults(), m)
	var (
		inFlight, maxSeen, refusals atomic.Int64
		wg                          sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if r := g.Acquire(context.Background(), "caller"); r != nil {
					refusals.Add(1)
					continue
				}
				n := inFlight.Add(1)
				for {
					old := maxSeen.Load()
					if n <= old || maxSeen.CompareAndSwap(old, n) {
						break
					}
				}
				runtime.Gosched()
				inFlight.Add(-1)
				g.Release("caller")
			}
		}()
	}
	wg.Wait()
	if n := refusals.Load(); n != 0 {
		t.Fatalf("%d of %d requests refused with a queue for all", n, workers*each)
	}
	if got := maxSeen.Load(); got > slots {
		t.Fatalf("%d requests held a slot at once, want at most %d", got, slots)
	}
	if g.pending.Load() != 0 || len(g.slots) != 0 || g.caller("caller").Load() != 0 {
		t.Fatalf("after all released: pending %d, slots %d, caller count %d; want 0, 0, 0", g.pending.Load(), len(g.slots), g.caller("caller").Load())
	}
}

// Callers racing for their own caps: none exceeds its cap, and every
// refusal is counted.
func TestGateConcurrentCallerCap(t *testing.T) {
	m := metrics.New()
	const perCaller, callers, workers, each = 3, 4, 20, 10
	g := NewGate(Limits{AppMaxRequests: 1000, CallerMaxRequests: perCaller}.WithDefaults(), m)
	var (
		wg                 sync.WaitGroup
		admitted, refusals atomic.Int64
		over               atomic.Int64
		inFlight           [callers]atomic.Int64
		principals         [callers]string
	)
	for c := range callers {
		principals[c] = fmt.Sprintf("spiffe://trellis.test/ns/shop/sa/c%d", c)
	}
	for w := range callers * workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := w % callers
			for range each {
				if r := g.Acquire(context.Background(), principals[c]); r != nil {
					if r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Msg, "--caller-max-requests") {
						t.Errorf("refusal %d %q, want a 503 for the caller cap", r.Code, r.Msg)
					}
					refusals.Add(1)
					continue
				}
				admitted.Add(1)
				if inFlight[c].Add(1) > perCaller {
					over.Add(1)
				}
				runtime.Gosched()
				inFlight[c].Add(-1)
				g.Release(principals[c])
			}
		}()
	}
	wg.Wait()
	if n := over.Load(); n != 0 {
		t.Fatalf("a caller held more than %d slots %d times", perCaller, n)
	}
	if got := admitted.Load() + refusals.Load(); got != callers*workers*each {
		t.Fatalf("admitted + refused = %d, want %d", got, callers*workers*each)
	}
	if got := refused(t, m, ReasonCallerBusy); got != float64(refusals.Load()) {
		t.Errorf("caller_busy metric = %v, want %d", got, refusals.Load())
	}
	for c := range callers {
		if got := g.caller(principals[c]).Load(); got != 0 {
			t.Errorf("caller %d counts %d requests after all released", c, got)
		}
	}
	if got := len(g.slots); got != 0 {
		t.Errorf("slots taken = %d after all released, want 0", got)
	}
}

// rawRequest sends head (without the final blank line) on a new
// connection to addr and returns the response and its body.
func rawRequest(t testing.TB, addr, head string) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body), c
}

func TestHeaderFields(t *testing.T) {
	m := metrics.New()
	var reached atomic.Int64
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = io.WriteString(w, "app")
	})
	const maxFields, maxBytes = 3, 1000
	srv := httptest.NewServer(HeaderFields(inner, maxFields, maxBytes, m))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	fields := func(n int, name func(i int) string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s: v\r\n", name(i))
		}
		return b.String()
	}
	distinct := func(i int) string { return fmt.Sprintf("X-F%d", i) }
	same := func(int) string { return "X-Same" }

	for _, tc := range []struct {
		name     string
		head     string
		wantCode int
		wantMsg  string
	}{
		{"fields at the limit", "GET / HTTP/1.1\r\nHost: app\r\n" + fields(maxFields, distinct), 200, ""},
		{"one field over", "GET / HTTP/1.1\r\nHost: app\r\n" + fields(maxFields+1, distinct), 431, "4 header fields, more than the proxy's limit of 3 (--max-header-fields)"},
		{"one name repeated", "GET / HTTP/1.1\r\nHost: app\r\n" + fields(maxFields+1, same), 431, "(--max-header-fields)"},
		{"small head", "GET /" + strings.Repeat("p", 100) + " HTTP/1.1\r\nHost: app\r\nX-Big: " + strings.Repeat("v", 500) + "\r\n", 200, ""},
		{"large value", "GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + strings.Repeat("v", maxBytes) + "\r\n", 431, "more than the proxy's limit of 1000 (--max-header-bytes)"},
		{"large target", "GET /" + strings.Repeat("p", maxBytes) + " HTTP/1.1\r\nHost: app\r\n", 431, "(--max-header-bytes)"},
	} {
		before, refusedBefore := reached.Load(), refused(t, m, ReasonHeaderLimit)
		resp, body, c := rawRequest(t, addr, tc.head)
		if resp.StatusCode != tc.wantCode {
			t.Errorf("%s: status %d, want %d (body %q)", tc.name, resp.StatusCode, tc.wantCode, body)
			continue
		}
		if tc.wantCode == 200 {
			if body != "app" || reached.Load() != before+1 {
				t.Errorf("%s: body %q, app reached %d times; want the app's answer once", tc.name, body, reached.Load()-before)
			}
			continue
		}
		if reached.Load() != before {
			t.Errorf("%s: the app saw a refused request", tc.name)
		}
		if !strings.HasPrefix(body, "trellis: ") || !strings.Contains(body, tc.wantMsg) {
			t.Errorf("%s: body %q, want it to mention %q", tc.name, body, tc.wantMsg)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", tc.name, got)
		}
		if !resp.Close {
			t.Errorf("%s: 431 without Connection: close", tc.name)
		}
		// The server keeps its word and closes the connection.
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("%s: connection still open after the 431 (read %d, %v)", tc.name, n, err)
		}
		if got := refused(t, m, ReasonHeaderLimit); got != refusedBefore+1 {
			t.Errorf("%s: header_limit refusals %v, want %v", tc.name, got, refusedBefore+1)
		}
	}
}
