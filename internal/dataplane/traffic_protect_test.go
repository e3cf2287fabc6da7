package dataplane_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestOutlierEjection(t *testing.T) {
	good, bad := &namedApp{name: "good"}, &namedApp{name: "bad"}
	m := newMesh(t, meshOptions{app: good})
	badAddr := m.addServer(startHTTPApp(t, bad, false))
	const consecutive, conc, base = 3, 4, 2 * time.Second // longer than 300 requests take on a loaded machine
	tp := &meshconfig.TrafficPolicy{Ref: "shop/catalog", Outlier: &meshconfig.OutlierPolicy{
		Consecutive5xx: consecutive, BaseEjectionTime: base, MaxEjectionTime: 10 * base, MaxEjectedPercent: 50,
	}}
	m.setCatalog(tp, m.inboundAddr, badAddr)
	c := testutil.HTTPClient(t)
	// Both endpoints serve; then bad answers 503. Peak-EWMA favours it
	// (its 503s are fast), so this is the hard case.
	if outs := load(100, conc, func(int) outcome { return get(t, c, m.url("/")) }); byEndpoint(outs)["bad"] == 0 {
		t.Fatalf("before failing: per endpoint %v, want both used", byEndpoint(outs))
	}
	bad.fail.Store(http.StatusServiceUnavailable)
	before := bad.hits.Load()
	outs := load(300, conc, func(int) outcome { return get(t, c, m.url("/")) })
	failed := 0
	for i, o := range outs {
		switch {
		case o.err != nil:
			t.Fatalf("request %d: %v", i, o.err)
		case o.code == http.StatusServiceUnavailable && o.endpoint == "bad":
			failed++
		case o.code != http.StatusOK:
			t.Errorf("request %d: %d from %q, want 200 or bad's 503", i, o.code, o.endpoint)
		}
	}
	// The third 503 ejects it; at most conc-1 more requests were already
	// on their way to it.
	got := bad.hits.Load() - before
	t.Logf("300 requests, concurrency %d: the failing endpoint got %d (%d answered 503 to the caller)", conc, got, failed)
	if got > consecutive+conc-1 {
		t.Errorf("failing endpoint got %d requests after it started failing, want at most %d", got, consecutive+conc-1)
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejections_total", map[string]string{"destination_service": "catalog", "result": "ejected"}); n != 1 {
		t.Errorf("ejections: %v, want 1", n)
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejected_endpoints", map[string]string{"destination_service": "catalog"}); n != 1 {
		t.Errorf("ejected endpoints gauge: %v, want 1", n)
	}
	// It recovers; after the back-off it gets traffic again.
	bad.fail.Store(0)
	time.Sleep(base + 100*time.Millisecond)
	before = bad.hits.Load()
	outs = load(300, conc, func(int) outcome { return get(t, c, m.url("/")) })
	for i, o := range outs {
		if o.err != nil || o.code != http.StatusOK {
			t.Fatalf("after recovery: request %d: %d %v", i, o.code, o.err)
		}
	}
	if got := bad.hits.Load() - before; got == 0 {
		t.Errorf("after the back-off: per endpoint %v, want the recovered endpoint used again", byEndpoint(outs))
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejected_endpoints", map[string]string{"destination_service": "catalog"}); n != 0 {
		t.Errorf("ejected endpoints gauge after recovery: %v, want 0", n)
	}
}

func TestOutlierMaxEjectedPercent(t *testing.T) {
	apps := []*namedApp{{name: "a"}, {name: "b"}, {name: "c"}}
	for _, a := range apps {
		a.fail.Store(http.StatusInternalServerError)
	}
	m := newMesh(t, meshOptions{app: apps[0]})
	addrs := []string{m.inboundAddr, m.addServer(startHTTPApp(t, apps[1], false)), m.addServer(startHTTPApp(t, apps[2], false))}
	// 34% of 3 is one endpoint.
	m.setCatalog(&meshconfig.TrafficPolicy{Ref: "shop/catalog", Outlier: &meshconfig.OutlierPolicy{
		Consecutive5xx: 2, BaseEjectionTime: time.Minute, MaxEjectionTime: time.Hour, MaxEjectedPercent: 34,
	}}, addrs...)
	c := testutil.HTTPClient(t)
	outs := load(300, 4, func(int) outcome { return get(t, c, m.url("/")) })
	for i, o := range outs {
		if o.err != nil || o.code != http.StatusInternalServerError {
			t.Fatalf("request %d: %d %v, want the apps' 500", i, o.code, o.err)
		}
	}
	late := byEndpoint(outs[200:])
	t.Logf("300 requests to 3 failing endpoints: per endpoint %v, the last 100: %v", byEndpoint(outs), late)
	if len(late) != 2 {
		t.Errorf("last 100 requests per endpoint %v, want exactly one endpoint ejected", late)
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejected_endpoints", nil); n != 1 {
		t.Errorf("ejected endpoints gauge: %v, want 1", n)
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejections_total", map[string]string{"result": "skipped"}); n == 0 {
		t.Errorf("skipped ejections: %v, want some", n)
	}
}

// The circuit breaker on the fast path (upstream listener) and on the
// net/http path (the HTTP proxy listener, HTTP/2 to the peer).
func TestCircuitBreaker(t *testing.T) {
	app := &namedApp{name: "slow", delay: 150 * time.Millisecond}
	m := newMesh(t, meshOptions{app: app})
	m.setCatalog(&meshconfig.TrafficPolicy{Ref: "shop/catalog", MaxConnections: 2, MaxPendingRequests: 2}, m.inboundAddr)
	viaProxy := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: http.ProxyURL(mustParseURL(t, "http://"+m.proxyAddr))}}
	t.Cleanup(viaProxy.CloseIdleConnections)
	allRefused := 0
	for _, path := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"fast path", testutil.HTTPClient(t), m.url("/")},
		{"net/http path", viaProxy, "http://catalog.shop/"},
	} {
		app.mostBusy.Store(0)
		const rounds, burst = 10, 10
		ok, refused := 0, 0
		for r := range rounds {
			// A burst at once: 2 go through, 2 wait, the rest are refused.
			var wg sync.WaitGroup
			outs := make([]outcome, burst)
			for i := range burst {
				wg.Add(1)
				go func() { defer wg.Done(); outs[i] = get(t, path.c, path.url) }()
			}
			wg.Wait()
			for i, o := range outs {
				switch {
				case o.err != nil:
					t.Fatalf("%s: round %d, request %d: %v", path.name, r, i, o.err)
				case o.code == http.StatusOK:
					ok++
				case o.code == http.StatusServiceUnavailable && strings.HasPrefix(o.body, "trellis: circuit breaker of TrafficPolicy shop/catalog open: "):
					refused++
				default:
					t.Errorf("%s: round %d, request %d: %d %q, want 200 or the circuit breaker's 503", path.name, r, i, o.code, o.body)
				}
			}
		}
		t.Logf("%s: %d requests in bursts of %d: %d served, %d refused by the circuit breaker; the app had at most %d at once",
			path.name, rounds*burst, burst, ok, refused, app.mostBusy.Load())
		allRefused += refused
		if most := app.mostBusy.Load(); most > 2 {
			t.Errorf("%s: the app had %d requests at once, want at most maxConnections 2", path.name, most)
		}
		if ok < rounds*2 || refused < rounds*(burst-4) {
			t.Errorf("%s: served %d, refused %d; want at least %d served and %d refused", path.name, ok, refused, rounds*2, rounds*(burst-4))
		}
	}
	if n := metric(t, m.clientMetrics, "trellis_circuit_breaker_overflows_total", map[string]string{"policy": "shop/catalog"}); int(n) != allRefused {
		t.Errorf("overflow metric %v, want %d", n, allRefused)
	}
}

// toggleGRPC is a gRPC app whose Latency/Call answers its name, or
// UNAVAILABLE while fail is set; it counts calls.
type toggleGRPC struct {
	name string
	fail atomic.Bool
	hits atomic.Int64
}

func (a *toggleGRPC) start(t *testing.T) string {
	l := listen(t)
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "trellis.test.Latency",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			a.hits.Add(1)
			if err := dec(new(wrapperspb.StringValue)); err != nil {
				return nil, err
			}
			if a.fail.Load() {
				return nil, status.Error(codes.Unavailable, a.name+" is failing")
			}
			return wrapperspb.String(a.name), nil
		}}},
	}, struct{}{})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// Over the HTTP/2 relay, a grpc-status UNAVAILABLE counts as a gateway
// error: the failing endpoint is ejected.
func TestOutlierEjectionGRPC(t *testing.T) {
	good, bad := &toggleGRPC{name: "good"}, &toggleGRPC{name: "bad"}
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: good.start(t)})
	badAddr := m.addServer(bad.start(t))
	const consecutive, conc = 3, 4
	m.setCatalog(&meshconfig.TrafficPolicy{Ref: "shop/catalog", Outlier: &meshconfig.OutlierPolicy{
		ConsecutiveGatewayErrors: consecutive, BaseEjectionTime: time.Minute, MaxEjectionTime: time.Hour, MaxEjectedPercent: 50,
	}}, m.inboundAddr, badAddr)
	cc := grpcClient(t, m.upstreamAddr)
	call := func(int) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(ctx, "/trellis.test.Latency/Call", wrapperspb.String("hi"), out); err != nil {
			return outcome{err: err}
		}
		return outcome{code: http.StatusOK, endpoint: out.Value}
	}
	if outs := load(100, conc, call); byEndpoint(outs)["bad"] == 0 {
		t.Fatalf("before failing: per endpoint %v, want both used", byEndpoint(outs))
	}
	bad.fail.Store(true)
	before := bad.hits.Load()
	unavailable := 0
	for i, o := range load(300, conc, call) {
		switch {
		case status.Code(o.err) == codes.Unavailable && strings.Contains(o.err.Error(), "bad is failing"):
			unavailable++
		case o.err != nil:
			t.Errorf("call %d: %v", i, o.err)
		}
	}
	got := bad.hits.Load() - before
	t.Logf("300 calls, concurrency %d: the failing endpoint got %d (%d UNAVAILABLE to the caller)", conc, got, unavailable)
	if got > consecutive+conc-1 {
		t.Errorf("failing endpoint got %d calls after it started failing, want at most %d", got, consecutive+conc-1)
	}
	if n := metric(t, m.clientMetrics, "trellis_outbound_ejections_total", map[string]string{"reason": "consecutive_gateway_errors", "result": "ejected"}); n != 1 {
		t.Errorf("ejections: %v, want 1", n)
	}
}

// maxRequestsPerConnection closes a pooled HTTP/1.1 connection to the
// peer after that many requests.
func TestMaxRequestsPerConnection(t *testing.T) {
	m := newMesh(t, meshOptions{})
	inner := listen(t)
	cl := &countingListener{Listener: inner}
	in := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get,
		Service: "catalog", Namespace: "shop", AppAddr: m.appAddr, Logger: m.logs.Logger,
	})
	serve(t, "counted inbound", func() error { return in.Serve(cl) })
	t.Cleanup(func() { shutdown(t, in.Shutdown) })
	m.setCatalog(&meshconfig.TrafficPolicy{Ref: "shop/catalog", MaxRequestsPerConnection: 10}, inner.Addr().String())
	c := testutil.HTTPClient(t)
	for i := range 200 {
		if o := get(t, c, m.url("/")); o.err != nil || o.code != http.StatusOK {
			t.Fatalf("request %d: %d %v", i, o.code, o.err)
		}
	}
	if n := cl.n.Load(); n < 20 || n > 21 {
		t.Errorf("200 sequential requests opened %d connections, want 20 (10 requests each)", n)
	}
}

// On the HTTP/2 relay a stream past maxConnections is refused at once
// (it cannot wait without stalling its connection): gRPC callers see
// UNAVAILABLE, and the app never has more than maxConnections calls.
func TestCircuitBreakerGRPC(t *testing.T) {
	var busy, most atomic.Int64
	l := listen(t)
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "trellis.test.Latency",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			n := busy.Add(1)
			defer busy.Add(-1)
			for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
			}
			if err := dec(new(wrapperspb.StringValue)); err != nil {
				return nil, err
			}
			time.Sleep(100 * time.Millisecond)
			return wrapperspb.String("ok"), nil
		}}},
	}, struct{}{})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: l.Addr().String()})
	m.setCatalog(&meshconfig.TrafficPolicy{Ref: "shop/catalog", MaxConnections: 2, MaxPendingRequests: 2}, m.inboundAddr)
	cc := grpcClient(t, m.upstreamAddr)
	const rounds, burst = 10, 10
	ok, refused := 0, 0
	for r := range rounds {
		errs := make([]error, burst)
		var wg sync.WaitGroup
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				errs[i] = cc.Invoke(ctx, "/trellis.test.Latency/Call", wrapperspb.String("hi"), new(wrapperspb.StringValue))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "503"):
				refused++
			default:
				t.Errorf("round %d, call %d: %v, want OK or UNAVAILABLE (503)", r, i, err)
			}
		}
	}
	t.Logf("%d calls in bursts of %d: %d served, %d refused; the app had at most %d at once", rounds*burst, burst, ok, refused, most.Load())
	if most.Load() > 2 || ok < rounds*2 || refused < rounds*(burst-4) {
		t.Errorf("served %d, refused %d, at most %d at the app; want at least %d served, %d refused, at most 2 at once",
			ok, refused, most.Load(), rounds*2, rounds*(burst-4))
	}
}
