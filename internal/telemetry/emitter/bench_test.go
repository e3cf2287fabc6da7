package emitter_test

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
)

// BenchmarkEmit is the cost on the request path. The collector is up and
// draining, or stuck (it accepts the stream and never acknowledges, so
// memory fills, then the spool, then Emit drops): Emit must stay just as
// cheap in every case. allocs/op includes the caller's own event (1).
func BenchmarkEmit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		stuck bool
		spool bool
	}{
		{"collector_up", false, false},
		{"collector_stuck/memory_only", true, false},
		{"collector_stuck/spool_full", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pki := collectortest.NewPKI(b)
			var c *collectortest.Collector
			if bc.stuck {
				c, _ = startStuckCollector(b, pki, collectortest.Config{})
			} else {
				c = pki.StartCollector(b, collectortest.Config{})
			}
			opts := emitter.Options{}
			if bc.spool {
				opts.SpoolDir = filepath.Join(b.TempDir(), "spool")
				opts.SpoolLimitBytes = 1 << 20
			}
			p := startProxy(b, pki, c.Addr, opts)
			if bc.stuck {
				// Fill memory (and the spool) first: the steady state of an
				// outage is dropping.
				for i := range 20_000 + 4_000 {
					p.Emit(event(i))
				}
				time.Sleep(200 * time.Millisecond)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				p.Emit(denyEvent())
			}
			b.StopTimer()
			st := p.Stats()
			b.ReportMetric(float64(st.Dropped)/float64(st.Emitted), "dropped/emitted")
		})
	}
}

// denyEvent is a typical audit event, built as the proxy builds one.
func denyEvent() *pb.Event {
	return &pb.Event{
		Time: eventTime, Kind: "authz.deny",
		SourceId: "spiffe://trellis.local/ns/shop/sa/frontend", DestinationId: "spiffe://trellis.local/ns/shop/sa/catalog",
		DestinationService: "catalog", DestinationNamespace: "shop", Protocol: "http", Method: "POST",
		Path: "/items", ResponseCode: 403, Decision: "deny", Policy: "shop/deny-writes",
	}
}

// BenchmarkEmitterToCollector is end-to-end throughput: events emitted,
// streamed over mTLS, appended (fsynced) to the collector's event log
// and acknowledged. The producer backs off when the memory queue is three
// quarters full, so nothing is dropped.
func BenchmarkEmitterToCollector(b *testing.B) {
	for _, bc := range []struct {
		name  string
		spool bool
	}{
		{"memory", false},
		{"spool", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pki := collectortest.NewPKI(b)
			c := pki.StartCollector(b, collectortest.Config{})
			opts := emitter.Options{}
			if bc.spool {
				opts.SpoolDir = filepath.Join(b.TempDir(), "spool")
			}
			p := newProxy(b, pki, c.Addr, opts)
			emitter.SetTimings(p.Emitter, 20*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond)
			p.run(b)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				for p.Stats().Queued > emitter.DefaultMemoryLimit*3/4 {
					runtime.Gosched()
				}
				p.Emit(event(i))
				i++
			}
			p.flush(b)
			b.StopTimer()
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
			if d := p.Dropped(); d != 0 {
				b.Fatalf("dropped %d events", d)
			}
			if got := c.Log.LastIndex(); got != uint64(i) {
				b.Fatalf("log holds %d records, want %d", got, i)
			}
		})
	}
}
