package dataplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
)

// The benchmarks compare a keep-alive HTTP/1.1 call straight to the app
// with the same call through both proxies (client -> outbound listener ->
// mTLS HTTP/2 -> inbound -> app); the difference is the cost of the mesh.

var benchBody = bytes.Repeat([]byte("x"), 1024)

// benchParallelism * GOMAXPROCS concurrent callers keep every hop busy, so
// the parallel benchmarks measure throughput rather than latency.
const benchParallelism = 8

func benchApp() http.Handler {
	n := strconv.Itoa(len(benchBody))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{n}
		_, _ = w.Write(benchBody)
	})
}

func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func benchGet(b *testing.B, c *http.Client, req *http.Request) {
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(benchBody)) {
		b.Fatalf("got %d with %d bytes (%v), want 200 with %d", resp.StatusCode, n, err, len(benchBody))
	}
}

func benchRequest(b *testing.B, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

func BenchmarkDirect(b *testing.B) {
	addr := startHTTPApp(b, benchApp(), false)
	c := benchClient(b)
	req := benchRequest(b, "http://"+addr+"/bench")
	benchGet(b, c, req)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		benchGet(b, c, req)
	}
	cpu.report(b)
}

func BenchmarkThroughProxies(b *testing.B) {
	benchThrough(b, newMesh(b, meshOptions{app: benchApp()}))
}

// benchThrough times GET /bench through m's proxies, one at a time,
// reporting allocations and CPU per request.
func benchThrough(b *testing.B, m *mesh) {
	c := benchClient(b)
	req := benchRequest(b, m.url("/bench"))
	benchGet(b, c, req)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		benchGet(b, c, req)
	}
	cpu.report(b)
}

func BenchmarkDirectParallel(b *testing.B) {
	addr := startHTTPApp(b, benchApp(), false)
	c := benchClient(b)
	url := "http://" + addr + "/bench"
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(b, url)
		for pb.Next() {
			benchGet(b, c, req)
		}
	})
	cpu.report(b)
}

func BenchmarkThroughProxiesParallel(b *testing.B) {
	m := newMesh(b, meshOptions{app: benchApp()})
	c := benchClient(b)
	url := m.url("/bench")
	benchGet(b, c, benchRequest(b, url))
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(b, url)
		for pb.Next() {
			benchGet(b, c, req)
		}
	})
	cpu.report(b)
}

// BenchmarkTelemetryOverhead measures what telemetry adds to the proxy
// pair: events=none has no emitter; access_log=off has one running against
// a collector on loopback, with the access log off (the default); and
// access_log=1.0 reports every request. The first two must not differ
// measurably: off, the request path pays one branch.
func BenchmarkTelemetryOverhead(b *testing.B) {
	for _, bc := range []struct {
		name    string
		emitter bool
		rate    float64
	}{
		{"events=none", false, 0},
		{"access_log=off", true, 0},
		{"access_log=1.0", true, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			o := meshOptions{app: benchApp(), pki: newPKI(b), accessLogRate: bc.rate}
			var em *emitter.Emitter
			if bc.emitter {
				em = startBenchEmitter(b, o.pki)
				o.events = em.Emit
			}
			m := newMesh(b, o)
			c := benchClient(b)
			req := benchRequest(b, m.url("/bench"))
			benchGet(b, c, req)
			var before emitter.Stats
			if em != nil {
				before = em.Stats()
			}
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				benchGet(b, c, req)
			}
			cpu.report(b)
			if em != nil {
				st := em.Stats()
				b.ReportMetric(float64(st.Emitted-before.Emitted)/float64(b.N), "events/op")
				if st.Dropped > 0 {
					b.Logf("%d of %d events dropped (queue full)", st.Dropped, st.Emitted)
				}
			}
		})
	}
}

// startBenchEmitter runs an emitter for the server proxy's identity,
// delivering to a collector-like server on loopback.
func startBenchEmitter(b *testing.B, p *pki) *emitter.Emitter {
	col := startAckCollector(b, p)
	client := p.cert(catalogID)
	em, err := emitter.New(emitter.Options{
		Addr: col.addr,
		TLS: func() *tls.Config {
			return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.roots, Certificates: []tls.Certificate{*client}}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); em.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		_ = em.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !em.Stats().Connected {
		if time.Now().After(deadline) {
			b.Fatal("emitter did not connect to the collector")
		}
		time.Sleep(time.Millisecond)
	}
	return em
}

// ackCollector is a Telemetry server on loopback that acknowledges every
// batch at once: the collector's protocol without its log.
type ackCollector struct {
	pb.UnimplementedTelemetryServer
	addr string
}

func startAckCollector(t testing.TB, p *pki) *ackCollector {
	t.Helper()
	cert, err := p.ca.IssueServing(identity.ControlPlaneID(p.ca.TrustDomain()), time.Hour, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	lis := listen(t)
	c := &ackCollector{addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert},
		ClientCAs: p.roots, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	pb.RegisterTelemetryServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return c
}

func (c *ackCollector) Stream(st pb.Telemetry_StreamServer) error {
	var through uint64
	for first := true; ; first = false {
		batch, err := st.Recv()
		if err != nil {
			return nil
		}
		evs := batch.GetEvents()
		if len(evs) > 0 {
			through = evs[len(evs)-1].GetSeq()
		}
		if first || len(evs) > 0 {
			if err := st.Send(&pb.EventAck{Through: through}); err != nil {
				return nil
			}
		}
	}
}

// cpuMeter reports the process CPU time (user+system) per operation, which
// includes the client and the app; subtract the direct benchmark's figure
// for the proxies' share.
type cpuMeter struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-m.start)/float64(b.N)/1e3, "cpu-us/op")
}
