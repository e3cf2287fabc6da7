package cli_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// grpcRouteMesh is orders (a gRPC health server) and orders-shadow (the
// same, 1 s slow, keeping the request bodies it got), with frontend
// calling orders.
type grpcRouteMesh struct {
	*routeMesh
	hc healthpb.HealthClient
	// shadowBodies are the HealthCheckRequest.service values the shadow
	// got.
	mu           sync.Mutex
	shadowBodies []string
}

func startGRPCRouteMesh(t *testing.T) *grpcRouteMesh {
	m := &grpcRouteMesh{routeMesh: &routeMesh{mesh: startMesh(t)}}
	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	app := func(slow bool) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var opts []grpc.ServerOption
		if slow {
			opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				m.mu.Lock()
				m.shadowBodies = append(m.shadowBodies, req.(*healthpb.HealthCheckRequest).GetService())
				m.mu.Unlock()
				time.Sleep(time.Second)
				return h(ctx, req)
			}))
		}
		srv := grpc.NewServer(opts...)
		hs := health.NewServer()
		for i := range 1000 {
			hs.SetServingStatus("probe-"+strconv.Itoa(i), healthpb.HealthCheckResponse_SERVING)
		}
		healthpb.RegisterHealthServer(srv, hs)
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(srv.Stop)
		return l.Addr().String()
	}
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders", Protocol: "grpc", AppAddr: app(false)})
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "orders-shadow", Protocol: "grpc", AppAddr: app(true)})
	m.front = meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend",
		Upstreams: []proxy.Upstream{{Service: "orders", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	cc, err := grpc.NewClient("passthrough:///"+m.front.UpstreamAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	m.hc = healthpb.NewHealthClient(cc)
	return m
}

// check calls orders through frontend for service probe-i.
func (m *grpcRouteMesh) check(i int, md ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := m.hc.Check(metadata.AppendToOutgoingContext(ctx, md...), &healthpb.HealthCheckRequest{Service: "probe-" + strconv.Itoa(i)})
	return err
}

// latencies measures n sequential calls: p50 and p99.
func (m *grpcRouteMesh) latencies(t *testing.T, n int) (p50, p99 time.Duration) {
	ds := make([]time.Duration, n)
	for i := range ds {
		began := time.Now()
		if err := m.check(i); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		ds[i] = time.Since(began)
	}
	slices.Sort(ds)
	return ds[n/2], ds[n*99/100]
}

const grpcMirrorRoute = `apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: orders-shadow, namespace: shop}
spec:
  service: orders
  rules:
  - matches: [{headers: {x-delay: "1"}}]
    fault: {delay: {fixed: 1s, percent: 100}}
  - matches: [{headers: {x-delay: "half"}}]
    fault: {delay: {fixed: 5ms, percent: 50}}
  - backends: [{service: orders}]
    mirror: {service: orders-shadow, percent: 100}
`

// A gRPC call is mirrored with its body by the HTTP/2 relay, and a
// mirror that takes 1 s does not slow the caller; a fault delay holds
// the delayed stream only, not the other calls on the connection.
func TestRouteGRPCMirrorAndDelay(t *testing.T) {
	m := startGRPCRouteMesh(t)
	deadline := time.Now().Add(15 * time.Second)
	for m.check(0) != nil {
		if time.Now().After(deadline) {
			t.Fatal("orders never answered through frontend")
		}
		time.Sleep(50 * time.Millisecond)
	}
	const n = 400
	p50, p99 := m.latencies(t, n)
	m.mustRun(t, grpcMirrorRoute, "apply", "-f", "-")
	testutil.EventuallyWithin(t, 15*time.Second, "orders-shadow gets a copy", func() bool {
		_ = m.check(0)
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.shadowBodies) > 0
	})
	time.Sleep(1100 * time.Millisecond) // the first copies end
	m.mu.Lock()
	before := len(m.shadowBodies)
	m.mu.Unlock()
	mp50, mp99 := m.latencies(t, n)
	t.Logf("%d gRPC calls each: without mirror p50 %s p99 %s; with a 1 s mirror p50 %s p99 %s", n, p50, p99, mp50, mp99)
	// The bounds leave room for a loaded machine; a caller that waited
	// for the mirror would take a second.
	if mp50 > 2*p50+5*time.Millisecond || mp99 > 2*p99+100*time.Millisecond {
		t.Errorf("the mirror slowed the caller: p50 %s → %s, p99 %s → %s", p50, mp50, p99, mp99)
	}
	time.Sleep(1100 * time.Millisecond)
	m.mu.Lock()
	got := m.shadowBodies[before:]
	bad := slices.IndexFunc(got, func(s string) bool {
		i, err := strconv.Atoi(strings.TrimPrefix(s, "probe-"))
		return err != nil || i < 0 || i >= n
	})
	all := len(m.shadowBodies)
	m.mu.Unlock()
	t.Logf("orders-shadow received %d copies of %d calls (at most 64 in flight)", len(got), n)
	if len(got) < 32 || len(got) > n {
		t.Errorf("orders-shadow received %d copies of %d calls, want 32 to %d", len(got), n, n)
	}
	if bad >= 0 {
		t.Errorf("orders-shadow got a copy whose body is %q, not one the caller sent", got[bad])
	}
	sent, skipped := m.routeEvents(t, `event="mirrored"`), m.routeEvents(t, `event="mirror_skipped"`)
	t.Logf("mirrored %d, skipped %d (counters); received %d in all", sent, skipped, all)
	if sent != all {
		t.Errorf("trellis_route_events_total mirrored %d, but orders-shadow received %d", sent, all)
	}

	// A 1 s delay on one call: 100 calls on the same connection finish
	// while it waits, and it then succeeds.
	var delayedDone atomic.Bool
	delayed := make(chan error, 1)
	began := time.Now()
	go func() {
		err := m.check(1, "x-delay", "1")
		delayedDone.Store(true)
		delayed <- err
	}()
	time.Sleep(50 * time.Millisecond)
	for i := range 100 {
		if err := m.check(i); err != nil {
			t.Fatalf("call %d beside the delayed one: %v", i, err)
		}
	}
	if delayedDone.Load() {
		t.Errorf("the delayed call ended before 100 calls beside it (%s): the delay held the connection or was not applied", time.Since(began))
	}
	if err := <-delayed; err != nil {
		t.Fatalf("delayed call: %v", err)
	}
	if d := time.Since(began); d < time.Second {
		t.Errorf("the delayed call took %s, want at least the 1s delay", d)
	}
	// Half of 400 calls delayed, each answered.
	d0 := m.routeEvents(t, `event="delayed"`)
	for i := range n {
		if err := m.check(i, "x-delay", "half"); err != nil {
			t.Fatalf("half-delayed call %d: %v", i, err)
		}
	}
	if d := m.routeEvents(t, `event="delayed"`) - d0; d < n*35/100 || d > n*65/100 {
		t.Errorf("%d of %d calls delayed at 50%%", d, n)
	}
}
