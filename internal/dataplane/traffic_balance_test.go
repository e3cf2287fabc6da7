package dataplane_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
)

// get is a load run's GET through the client proxy with extra headers.
func get(t *testing.T, c *http.Client, url string, hdr ...string) outcome {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{code: resp.StatusCode, endpoint: resp.Header.Get("X-Endpoint"), body: string(b), err: err}
}

// Requests and concurrency of the latency runs; warm: sequential
// requests first, so each endpoint has an estimate (peak-EWMA knows
// nothing of a request until it completes).
const (
	latRequests = 600
	latConc     = 8
	latWarm     = 20
	slowDelay   = 100 * time.Millisecond
)

// checkLatency compares peak-EWMA with round robin over a fast and a slow
// (slowDelay) endpoint, calling run for each policy.
func checkLatency(t *testing.T, run func(tp *meshconfig.TrafficPolicy) []outcome) {
	for _, tc := range []struct {
		name string
		tp   *meshconfig.TrafficPolicy
	}{
		{"peak-ewma (no TrafficPolicy)", nil},
		{"round-robin", &meshconfig.TrafficPolicy{Ref: "shop/catalog", LB: resource.LBRoundRobin}},
	} {
		outs := run(tc.tp)
		for i, o := range outs {
			if o.err != nil || o.code != http.StatusOK {
				t.Fatalf("%s: request %d: %d %v", tc.name, i, o.code, o.err)
			}
		}
		all := p99(outs, nil)
		fast := p99(outs, func(o outcome) bool { return o.endpoint == "fast" })
		t.Logf("%s: %d requests, concurrency %d: p99 %v (fast endpoint's requests: p99 %v); per endpoint %v",
			tc.name, len(outs), latConc, all, fast, byEndpoint(outs))
		if tc.tp == nil {
			if all > 2*fast {
				t.Errorf("peak-ewma: p99 %v, want at most 2x the fast endpoint's %v", all, fast)
			}
		} else if all < slowDelay {
			t.Errorf("round robin: p99 %v, want at least the slow endpoint's %v", all, slowDelay)
		}
	}
}

func TestPeakEWMAAvoidsSlowEndpointHTTP1(t *testing.T) {
	fast, slow := &namedApp{name: "fast"}, &namedApp{name: "slow", delay: slowDelay}
	m := newMesh(t, meshOptions{app: fast})
	slowAddr := m.addServer(startHTTPApp(t, slow, false))
	checkLatency(t, func(tp *meshconfig.TrafficPolicy) []outcome {
		m.setCatalog(tp, m.inboundAddr, slowAddr)
		c := testutil.HTTPClient(t)
		for range latWarm {
			get(t, c, m.url("/"))
		}
		return load(latRequests, latConc, func(int) outcome { return get(t, c, m.url("/")) })
	})
}

// latService is a gRPC service with one unary method, Call, that answers
// its server's name after its delay.
func latService(name string, delay time.Duration) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "trellis.test.Latency",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			time.Sleep(delay)
			_ = grpc.SetHeader(ctx, metadata.Pairs("x-endpoint", name))
			return wrapperspb.String(name), nil
		}}},
	}
}

func startLatencyApp(t *testing.T, name string, delay time.Duration) string {
	t.Helper()
	l := listen(t)
	srv := grpc.NewServer()
	srv.RegisterService(latService(name, delay), struct{}{})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func TestPeakEWMAAvoidsSlowEndpointGRPC(t *testing.T) {
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolGRPC, appAddr: startLatencyApp(t, "fast", 0)})
	slowAddr := m.addServer(startLatencyApp(t, "slow", slowDelay))
	checkLatency(t, func(tp *meshconfig.TrafficPolicy) []outcome {
		m.setCatalog(tp, m.inboundAddr, slowAddr)
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
		for range latWarm {
			call(0)
		}
		return load(latRequests, latConc, call)
	})
}

func TestConsistentHash(t *testing.T) {
	apps := []*namedApp{{name: "a"}, {name: "b"}, {name: "c"}}
	m := newMesh(t, meshOptions{app: apps[0]})
	addrs := []string{m.inboundAddr, m.addServer(startHTTPApp(t, apps[1], false)), m.addServer(startHTTPApp(t, apps[2], false))}
	c := testutil.HTTPClient(t)
	for _, tc := range []struct {
		name string
		tp   *meshconfig.TrafficPolicy
		hdr  func(user string) []string
	}{
		{"header", &meshconfig.TrafficPolicy{Ref: "shop/catalog", LB: resource.LBConsistentHash, HashHeader: "x-user"},
			func(u string) []string { return []string{"X-User", u} }},
		{"cookie", &meshconfig.TrafficPolicy{Ref: "shop/catalog", LB: resource.LBConsistentHash, HashCookie: "session"},
			func(u string) []string { return []string{"Cookie", "theme=dark; session=" + u} }},
	} {
		m.setCatalog(tc.tp, addrs...)
		const users, each = 40, 10
		outs := load(users*each, 8, func(i int) outcome {
			return get(t, c, m.url("/"), tc.hdr("user-"+strconv.Itoa(i%users))...)
		})
		where := map[string]string{}
		for i, o := range outs {
			if o.err != nil || o.code != http.StatusOK {
				t.Fatalf("%s: request %d: %d %v", tc.name, i, o.code, o.err)
			}
			u := "user-" + strconv.Itoa(i%users)
			if prev, ok := where[u]; ok && prev != o.endpoint {
				t.Errorf("%s: %s went to %s and %s, want one endpoint", tc.name, u, prev, o.endpoint)
			}
			where[u] = o.endpoint
		}
		spread := map[string]int{}
		for _, e := range where {
			spread[e]++
		}
		t.Logf("%s: %d requests of %d keys; keys per endpoint %v", tc.name, len(outs), users, spread)
		if len(spread) < 3 {
			t.Errorf("%s: keys per endpoint %v, want all three endpoints used", tc.name, spread)
		}
		// Without the key: the fallback balancer spreads the requests.
		none := byEndpoint(load(60, 4, func(int) outcome { return get(t, c, m.url("/")) }))
		if len(none) < 2 || none[""] != 0 {
			t.Errorf("%s: requests without a key per endpoint %v, want spread over endpoints", tc.name, none)
		}
	}
}
