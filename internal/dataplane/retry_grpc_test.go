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
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// startGRPCFailing starts a gRPC app answering every call with code
// after delay, counting calls.
func startGRPCFailing(t *testing.T, code codes.Code, delay time.Duration, n *atomic.Int64) string {
	t.Helper()
	l := listen(t)
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		n.Add(1)
		select {
		case <-time.After(delay):
		case <-stream.Context().Done():
		}
		return status.Error(code, "app says "+code.String())
	}))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// grpcLoad makes n Check calls from workers goroutines; it returns the
// codes.
func grpcLoad(t *testing.T, client healthpb.HealthClient, n, workers int) map[codes.Code]int {
	var mu sync.Mutex
	got := map[codes.Code]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "catalog"})
				cancel()
				mu.Lock()
				got[status.Code(err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

func grpcMesh(t *testing.T) (*mesh, healthpb.HealthClient) {
	appAddr, hs := startGRPCApp(t)
	hs.SetServingStatus("catalog", healthpb.HealthCheckResponse_SERVING)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	return m, healthpb.NewHealthClient(grpcClient(t, m.upstreamAddr))
}

func TestGRPCRetriesHideUnavailableEndpoint(t *testing.T) {
	m, client := grpcMesh(t)
	var bad atomic.Int64
	badAddr := addEndpointAt(t, m, startGRPCFailing(t, codes.Unavailable, 0, &bad))
	for _, nonIdem := range []bool{true, false} {
		tp := retryPolicy(2, meshconfig.RetryUnavailable, 1, 10)
		tp.Retry.NonIdempotent = nonIdem
		setTraffic(m, tp, badAddr, m.inboundAddr)
		before := bad.Load()
		const n = 300
		got := grpcLoad(t, client, n, 8)
		hits := bad.Load() - before
		t.Logf("nonIdempotent=%v: %d calls, %d reached the UNAVAILABLE endpoint; codes %v", nonIdem, n, hits, got)
		switch {
		case nonIdem && (got[codes.OK] != n || hits == 0):
			t.Errorf("nonIdempotent: codes %v, %d bad hits; want %d OK, some hidden", got, hits, n)
		case !nonIdem && (got[codes.Unavailable] != int(hits) || got[codes.OK]+got[codes.Unavailable] != n):
			t.Errorf("without nonIdempotent: codes %v, %d bad hits; want the %d UNAVAILABLE answered, not retried", got, hits, hits)
		}
	}
}

func TestGRPCRetryBudgetUnderTotalFailure(t *testing.T) {
	var hits atomic.Int64
	appAddr := startGRPCFailing(t, codes.Unavailable, 0, &hits)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	other := addEndpointAt(t, m, startGRPCFailing(t, codes.Unavailable, 0, &hits))
	tp := retryPolicy(3, meshconfig.RetryUnavailable, 0.2, 10)
	tp.Retry.NonIdempotent = true
	setTraffic(m, tp, m.inboundAddr, other)
	client := healthpb.NewHealthClient(grpcClient(t, m.upstreamAddr))
	var sent atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 3*time.Second {
				sent.Add(1)
				_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{})
				if status.Code(err) != codes.Unavailable {
					t.Errorf("got %v, want UNAVAILABLE", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	n, h := sent.Load(), hits.Load()
	// As in TestRetryBudgetUnderTotalFailure: +2 s for whole seconds.
	allowed := 0.2*float64(n) + 10*(elapsed.Seconds()+2)
	t.Logf("%d calls in %v, %d reached the apps: %d retries, budget %.0f", n, elapsed, h, h-n, allowed)
	if r := h - n; float64(r) > allowed || r <= 0 {
		t.Errorf("%d retries, want 1..%.0f", r, allowed)
	}
}

func TestGRPCTimeoutIsDeadlineExceeded(t *testing.T) {
	var hits atomic.Int64
	appAddr := startGRPCFailing(t, codes.OK, 3*time.Second, &hits)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: appAddr})
	setTraffic(m, &meshconfig.TrafficPolicy{Ref: "shop/catalog", Timeout: 200 * time.Millisecond}, m.inboundAddr)
	client := healthpb.NewHealthClient(grpcClient(t, m.upstreamAddr))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		took := time.Since(start)
		cancel()
		st := status.Convert(err)
		if st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "timeout of TrafficPolicy shop/catalog (200ms) expired") {
			t.Errorf("%d: got %v, want DEADLINE_EXCEEDED naming the policy", i, err)
		}
		if took < 200*time.Millisecond || took > 600*time.Millisecond {
			t.Errorf("%d: answered after %v, want 200ms + up to 400ms", i, took)
		}
	}
	// The proxy stays usable: the timer cancelled the upstream streams.
	// Counted when the relay ends the stream, which may follow the
	// caller's answer by a moment.
	var n float64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n = metric(t, m.clientMetrics, "trellis_timeouts_total", map[string]string{"destination_service": "catalog", "kind": "request"})
		if n >= 20 || time.Now().After(deadline) {
			break
		}
	}
	if n != 20 {
		t.Errorf("timeouts counted: %v, want 20", n)
	}
}

// startResetting starts an h2c app that resets every stream
// (RST_STREAM, no response head), counting them.
func startResetting(t *testing.T, n *atomic.Int64) string {
	t.Helper()
	l := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		n.Add(1)
		panic(http.ErrAbortHandler)
	})}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// An endpoint that resets streams before any response is hidden by
// retries on reset (the HTTP/2 relay offers the reset try to the
// policy), and without reset among the conditions the caller sees it.
func TestGRPCRetriesHideResetStreams(t *testing.T) {
	m, client := grpcMesh(t)
	var resets atomic.Int64
	badAddr := addEndpointAt(t, m, startResetting(t, &resets))
	for _, on := range []meshconfig.RetryOn{meshconfig.RetryReset, meshconfig.RetryUnavailable} {
		tp := retryPolicy(2, on, 1, 10)
		tp.Retry.NonIdempotent = true
		setTraffic(m, tp, badAddr, m.inboundAddr)
		before := resets.Load()
		const n = 300
		got := grpcLoad(t, client, n, 8)
		hits := resets.Load() - before
		t.Logf("on=%v: %d calls, %d reset by the bad endpoint; codes %v", on, n, hits, got)
		if hits == 0 {
			t.Fatalf("no call reached the resetting endpoint")
		}
		if on == meshconfig.RetryReset && got[codes.OK] != n {
			t.Errorf("retry on reset: codes %v, want %d OK", got, n)
		}
		if on != meshconfig.RetryReset && got[codes.OK] != n-int(hits) {
			t.Errorf("without reset: codes %v with %d resets, want those %d to fail", got, hits, hits)
		}
	}
}
