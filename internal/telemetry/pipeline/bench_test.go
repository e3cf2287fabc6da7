package pipeline_test

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
	"github.com/trellismesh/trellis/internal/telemetry/pipeline"
	"github.com/trellismesh/trellis/internal/testutil"
)

// startPipeline runs a pipeline with a file sink behind a gRPC server
// with the PKI's collector certificate, as `trellis collector` does.
func startPipeline(t testing.TB, pki *collectortest.PKI, sinks ...string) (*pipeline.Pipeline, string) {
	t.Helper()
	p, err := pipeline.Open(pipeline.Options{DataDir: t.TempDir(), Sinks: sinks, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLS(t))))
	p.Collector.Register(srv)
	p.Start()
	go srv.Serve(lis)
	t.Cleanup(func() {
		p.Collector.Shutdown()
		srv.Stop()
		if err := p.Close(); err != nil {
			t.Errorf("close pipeline: %v", err)
		}
	})
	return p, lis.Addr().String()
}

// startEmitter is a proxy's emitter for shop/catalog streaming to addr.
func startEmitter(t testing.TB, pki *collectortest.PKI, addr string) *emitter.Emitter {
	t.Helper()
	em, err := emitter.New(emitter.Options{Addr: addr, TLS: pki.ClientTLS(t, pki.WorkloadID(t, "shop", "catalog")), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); em.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		em.Close()
	})
	return em
}

var benchTime = timestamppb.New(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))

// denyEvent is a typical audit event as the proxy builds one.
func denyEvent() *pb.Event {
	return &pb.Event{
		Time: benchTime, Kind: "authz.deny",
		SourceId: "spiffe://trellis.local/ns/shop/sa/frontend", SourceService: "frontend", SourceNamespace: "shop",
		DestinationId: "spiffe://trellis.local/ns/shop/sa/catalog", DestinationService: "catalog", DestinationNamespace: "shop",
		Protocol: "http", Method: "POST", Path: "/items", ResponseCode: 403, Decision: "deny", Policy: "shop/deny-writes", Rule: 0,
	}
}

// BenchmarkProxyToFileSink is the throughput figure: events
// emitted by a proxy's emitter, streamed over mTLS to the collector,
// appended (fsynced, hash-chained) to the event log, and written by the
// file sink's deliverer, with the sink's cursor persisted. The timer runs
// until the sink has confirmed the last event. The producer backs off
// when the emitter's memory queue is three quarters full, so nothing is
// dropped; events/s is the figure to hold against the 50,000 target.
func BenchmarkProxyToFileSink(b *testing.B) {
	pki := collectortest.NewPKI(b)
	sinkPath := filepath.Join(b.TempDir(), "audit.jsonl")
	p, addr := startPipeline(b, pki, "file://"+sinkPath)
	em := startEmitter(b, pki, addr)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		for em.Stats().Queued > emitter.DefaultMemoryLimit*3/4 {
			runtime.Gosched()
		}
		em.Emit(denyEvent())
		n++
	}
	for p.SinkStats()[0].Cursor < uint64(n) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	if d := em.Dropped(); d != 0 {
		b.Fatalf("dropped %d events", d)
	}
	if got := p.Events.LastIndex(); got != uint64(n) {
		b.Fatalf("log holds %d records, want %d", got, n)
	}
}
