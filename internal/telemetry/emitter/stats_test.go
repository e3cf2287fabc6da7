package emitter_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
	"github.com/trellismesh/trellis/internal/testutil"
)

// captureServer is a Telemetry server on loopback (mTLS, the control
// plane's identity) that keeps every batch it receives and acknowledges
// events at once. The collector proper ignores stats it does not use; this
// one shows what went on the wire.
type captureServer struct {
	pb.UnimplementedTelemetryServer
	Addr string

	mu      sync.Mutex
	batches []*pb.EventBatch
}

func startCaptureServer(t testing.TB, pki *collectortest.PKI) *captureServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &captureServer{Addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLS(t))))
	pb.RegisterTelemetryServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return s
}

func (s *captureServer) Stream(st pb.Telemetry_StreamServer) error {
	var through uint64
	for first := true; ; first = false {
		b, err := st.Recv()
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.batches = append(s.batches, b)
		s.mu.Unlock()
		if evs := b.GetEvents(); first || len(evs) > 0 {
			if len(evs) > 0 {
				through = evs[len(evs)-1].GetSeq()
			}
			if err := st.Send(&pb.EventAck{Through: through}); err != nil {
				return nil
			}
		}
	}
}

func (s *captureServer) received() []*pb.EventBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.EventBatch(nil), s.batches...)
}

// stats returns the stats batches received.
func (s *captureServer) stats() []*pb.TrafficStats {
	var out []*pb.TrafficStats
	for _, b := range s.received() {
		if b.GetStats() != nil {
			out = append(out, b.GetStats())
		}
	}
	return out
}

// countingStats is an Options.Stats whose reports carry the call number
// (as the requests of one edge).
type countingStats struct{ calls atomic.Uint64 }

func (c *countingStats) stats() *pb.TrafficStats {
	n := c.calls.Add(1)
	return &pb.TrafficStats{Service: "frontend", Namespace: "shop", Edges: []*pb.EdgeStats{{
		SourceService: "web", SourceNamespace: "shop", DestinationService: "frontend", DestinationNamespace: "shop", Requests: n,
	}}}
}

func callOf(s *pb.TrafficStats) uint64 { return s.GetEdges()[0].GetRequests() }

// Stats go out as soon as the stream is up, before any interval passed,
// in a batch of their own right after hello.
func TestStatsSentRightAfterHello(t *testing.T) {
	pki := collectortest.NewPKI(t)
	srv := startCaptureServer(t, pki)
	var c countingStats
	startProxy(t, pki, srv.Addr, emitter.Options{Stats: c.stats, StatsInterval: time.Hour})
	testutil.Eventually(t, "the first stats", func() bool { return len(srv.stats()) == 1 })
	got := srv.received()
	if len(got) != 2 || got[0].GetHelloInstance() == "" || got[0].GetStats() != nil {
		t.Fatalf("batches: got %v, want hello then stats", got)
	}
	if s := got[1]; s.GetHelloInstance() != "" || len(s.GetEvents()) != 0 || callOf(s.GetStats()) != 1 || s.GetStats().GetService() != "frontend" {
		t.Errorf("second batch: got %v, want the first stats report alone", s)
	}
}

// Then every StatsInterval of the emitter's clock, neither sooner nor
// stopping, while events flow and are acknowledged as before.
func TestStatsRepeatAtInterval(t *testing.T) {
	pki := collectortest.NewPKI(t)
	srv := startCaptureServer(t, pki)
	var c countingStats
	const interval = 10 * time.Second
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, srv.Addr, emitter.Options{Stats: c.stats, StatsInterval: interval, Clock: clk})
	testutil.Eventually(t, "the first stats", func() bool { return len(srv.stats()) == 1 })
	const rounds = 5
	for i := range rounds {
		for j := range 10 {
			p.Emit(event(i*10 + j))
		}
		clk.Advance(interval - time.Millisecond)
		p.flush(t)
		if got, want := c.calls.Load(), uint64(i+1); got != want {
			t.Fatalf("short of interval %d: got %d stats reports, want %d", i+1, got, want)
		}
		clk.Advance(time.Millisecond)
		testutil.Eventually(t, fmt.Sprintf("stats report %d", i+2), func() bool { return len(srv.stats()) == i+2 })
	}
	p.flush(t)
	var events int
	for i, b := range srv.received() {
		if b.GetStats() != nil && (len(b.GetEvents()) > 0 || b.GetHelloInstance() != "") {
			t.Errorf("batch %d mixes stats with events or hello: %v", i, b)
		}
		events += len(b.GetEvents())
	}
	if events != rounds*10 {
		t.Errorf("events received: got %d, want %d", events, rounds*10)
	}
	// Every report made was sent, in order.
	if got, want := c.calls.Load(), uint64(rounds+1); got != want {
		t.Errorf("stats reports made: got %d, want %d", got, want)
	}
	for i, s := range srv.stats() {
		if got := callOf(s); got != uint64(i+1) {
			t.Fatalf("stats report %d carries call %d, want %d", i, got, i+1)
		}
	}
}

// A nil report sends nothing: no empty batch reaches the collector.
func TestNilStatsSkipped(t *testing.T) {
	pki := collectortest.NewPKI(t)
	srv := startCaptureServer(t, pki)
	var calls atomic.Int64
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, srv.Addr, emitter.Options{
		Stats:         func() *pb.TrafficStats { calls.Add(1); return nil },
		StatsInterval: time.Second,
		Clock:         clk,
	})
	p.Emit(event(0))
	p.flush(t)
	for i := range 4 {
		clk.Advance(time.Second)
		testutil.Eventually(t, fmt.Sprintf("stats call %d", i+2), func() bool { return calls.Load() == int64(i+2) })
	}
	// Behind anything the stats calls could have sent on the stream.
	p.Emit(event(1))
	p.flush(t)
	for i, b := range srv.received() {
		if i > 0 && len(b.GetEvents()) == 0 {
			t.Errorf("batch %d: got %v, want only hello and events", i, b)
		}
	}
}

// logRecords keeps log records for assertions.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecords) WithGroup(string) slog.Handler            { return h }

func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *logRecords) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level {
			n++
		}
	}
	return n
}

// Resolve answering "" means not known yet: the emitter asks again after
// a wait on its clock, quietly, and connects once it has an address, with
// the TLS config for it.
func TestResolveWaitsForAnAddress(t *testing.T) {
	pki := collectortest.NewPKI(t)
	srv := startCaptureServer(t, pki)
	clientTLS := pki.ClientTLS(t, pki.WorkloadID(t, "shop", "frontend"))
	var resolves atomic.Int64
	var tlsAddr atomic.Value
	logs := &logRecords{}
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, "", emitter.Options{
		Resolve: func() string {
			if resolves.Add(1) <= 10 {
				return ""
			}
			return srv.Addr
		},
		TLSFor: func(addr string) *tls.Config {
			tlsAddr.Store(addr)
			return clientTLS()
		},
		Logger: slog.New(logs),
		Clock:  clk,
	})
	p.Emit(event(0))
	for i := range int64(10) {
		clk.BlockUntil(1) // waiting to ask again
		if got := resolves.Load(); got != i+1 {
			t.Fatalf("waiting after answer %d: Resolve called %d times", i+1, got)
		}
		clk.Advance(time.Second) // past the wait
	}
	p.flush(t)
	if n := resolves.Load(); n < 11 {
		t.Errorf("Resolve called %d times, want at least 11", n)
	}
	if got, _ := tlsAddr.Load().(string); got != srv.Addr {
		t.Errorf("TLSFor called with %q, want %q", got, srv.Addr)
	}
	if n := logs.count(slog.LevelWarn); n != 0 {
		t.Errorf("warnings while the address was unknown: got %d, want 0", n)
	}
	var waiting int
	logs.mu.Lock()
	for _, r := range logs.recs {
		if r.Level == slog.LevelDebug && r.Message == "telemetry: collector address not known yet; events wait until it is" {
			waiting++
		}
	}
	logs.mu.Unlock()
	if waiting != 1 {
		t.Errorf("debug lines about the unknown address: got %d, want 1", waiting)
	}
}

// When Resolve's answer changes under an established stream, the emitter
// moves to the new collector at its next recheck on the clock.
func TestResolveMovesToNewCollector(t *testing.T) {
	pki := collectortest.NewPKI(t)
	a, b := startCaptureServer(t, pki), startCaptureServer(t, pki)
	var addr atomic.Value
	addr.Store(a.Addr)
	clk := clock.NewFake(time.Now())
	p := startProxy(t, pki, "", emitter.Options{Resolve: func() string { return addr.Load().(string) }, Clock: clk})
	p.Emit(event(0))
	p.flush(t)
	addr.Store(b.Addr)
	p.Emit(event(1)) // before the recheck: still to a
	p.flush(t)
	clk.Advance(time.Minute) // past the recheck interval
	testutil.Eventually(t, "a stream to the new collector", func() bool { return len(b.received()) > 0 })
	p.Emit(event(2))
	p.flush(t)
	seqs := func(s *captureServer) (out []uint64) {
		for _, b := range s.received() {
			for _, ev := range b.GetEvents() {
				out = append(out, ev.GetSeq())
			}
		}
		return out
	}
	if got := seqs(a); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("first collector got seqs %v, want [1 2]", got)
	}
	if got := seqs(b); !slices.Equal(got, []uint64{3}) {
		t.Errorf("second collector got seqs %v, want [3]", got)
	}
}

func TestNewValidatesAddressSources(t *testing.T) {
	tlsFor := func(string) *tls.Config { return nil }
	for _, tt := range []struct {
		name string
		opts emitter.Options
		ok   bool
	}{
		{"resolve instead of addr", emitter.Options{Resolve: func() string { return "" }, TLSFor: tlsFor}, true},
		{"neither addr nor resolve", emitter.Options{TLSFor: tlsFor}, false},
		{"neither tls nor tlsFor", emitter.Options{Addr: "127.0.0.1:1"}, false},
		{"negative stats interval", emitter.Options{Addr: "127.0.0.1:1", TLSFor: tlsFor, StatsInterval: -time.Second}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := emitter.New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if e != nil {
				_ = e.Close()
			}
		})
	}
}
