package cli_test

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

const trafficAllow = `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads, namespace: shop}
spec:
  selector: {service: catalog}
  rules: [{from: [{services: [frontend]}], to: [{methods: [GET]}]}]
`

const trafficHash = `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  loadBalancer: {policy: consistent-hash, hashOn: {header: x-user}}
`

const trafficBreaker = `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  circuitBreaker: {maxConnections: 1, maxPendingRequests: 1}
`

// A TrafficPolicy applied with the CLI reaches the caller's proxy through
// the control plane: consistent hashing keeps each of 20 users on one of
// two catalog instances over 300 requests; then a circuit breaker of one
// connection and one waiting request answers a burst's excess with the
// 503 naming the policy, while the app never has two requests at once.
func TestTrafficPolicyBalancingThroughProxies(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, trafficAllow, "apply", "-f", "-")
	var delay atomic.Int64
	var busy, mostBusy atomic.Int64
	startApp := func(name string) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := busy.Add(1)
			defer busy.Add(-1)
			for old := mostBusy.Load(); n > old && !mostBusy.CompareAndSwap(old, n); old = mostBusy.Load() {
			}
			time.Sleep(time.Duration(delay.Load()))
			io.WriteString(w, name)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return l.Addr().String()
	}
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: startApp("one")})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: startApp("two")})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	c := testutil.HTTPClient(t)
	get := func(user string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+front.UpstreamAddr(0)+"/items", nil)
		if user != "" {
			req.Header.Set("X-User", user)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET /items: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Until both instances answer (the policy and endpoints pushed).
	m.mustRun(t, trafficHash, "apply", "-f", "-")
	seen := map[string]bool{}
	for deadline := time.Now().Add(15 * time.Second); len(seen) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("both catalog instances never answered: %v", seen)
		}
		if code, body := get(""); code == http.StatusOK {
			seen[body] = true
		}
	}
	// The proxy gets the TrafficPolicy in the same push as the endpoints
	// or a later one: wait until each of 10 keys stays put and the keys
	// use both instances. One key staying put proves nothing: peak-EWMA
	// alone keeps sending to the faster instance.
	for deadline := time.Now().Add(10 * time.Second); ; {
		hashed, used := true, map[string]bool{}
		for k := range 10 {
			key := "probe-" + strconv.Itoa(k)
			_, a := get(key)
			used[a] = true
			for range 4 {
				if _, b := get(key); b != a {
					hashed = false
				}
			}
		}
		if hashed && len(used) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("requests with one x-user never stuck to one instance while keys used both")
		}
	}
	where := map[string]string{}
	for i := range 300 {
		user := "user-" + strconv.Itoa(i%20)
		code, body := get(user)
		if code != http.StatusOK {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		if prev, ok := where[user]; ok && prev != body {
			t.Errorf("%s went to %s and %s, want one instance", user, prev, body)
		}
		where[user] = body
	}
	spread := map[string]int{}
	for _, e := range where {
		spread[e]++
	}
	t.Logf("300 requests of 20 users: users per instance %v", spread)
	if len(spread) != 2 {
		t.Errorf("users per instance %v, want both instances used", spread)
	}

	m.mustRun(t, trafficBreaker, "apply", "-f", "-")
	delay.Store(int64(150 * time.Millisecond))
	const policyMsg = "trellis: circuit breaker of TrafficPolicy shop/catalog open: "
	ok, refused := 0, 0
	for deadline := time.Now().Add(15 * time.Second); refused == 0 || ok+refused < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("after 15s: %d served, %d refused, want 200 requests with some refused", ok, refused)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := get("")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case code == http.StatusOK:
					ok++
				case code == http.StatusServiceUnavailable && strings.HasPrefix(body, policyMsg):
					refused++
				default:
					t.Errorf("%d %q, want 200 or the circuit breaker's 503", code, body)
				}
			}()
		}
		wg.Wait()
		if refused == 0 {
			mostBusy.Store(0) // the breaker is not pushed yet
		}
	}
	t.Logf("circuit breaker: %d served, %d refused; the apps had at most %d requests at once", ok, refused, mostBusy.Load())
	if most := mostBusy.Load(); most > 1 {
		t.Errorf("the apps had %d requests at once, want at most maxConnections 1", most)
	}
}
