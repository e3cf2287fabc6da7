package sink

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// BenchmarkDeliverFile: records per second from the event log to the file
// sink (JSON encoding, write, fsync per batch of 500, cursor per batch).
func BenchmarkDeliverFile(b *testing.B) {
	log := openLog(b)
	events := make([]*pb.Event, 1000)
	for i := 0; i < b.N; i += len(events) {
		n := min(len(events), b.N-i)
		for j := range n {
			events[j] = testEvent(i + j + 1)
		}
		if _, err := log.Append(events[:n]...); err != nil {
			b.Fatal(err)
		}
	}
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	s, err := Parse("file://"+path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d := newDeliverer(b, DelivererConfig{Name: "bench", Sink: s, Log: log, Dir: b.TempDir(), BatchDelay: -1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	b.ResetTimer()
	go func() { done <- d.Run(ctx) }()
	for d.Stats().Cursor < uint64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkJSON(b *testing.B) {
	rec := telemetry.Record{Index: 12345, Event: testEvent(3)}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendJSON(buf[:0], rec)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkSyslogFrame(b *testing.B) {
	f := syslogFormat{facility: facilityAuthpriv, hostname: "collector-0", maxMsg: defaultSyslogMaxMessage}
	rec := telemetry.Record{Index: 12345, Event: testEvent(3)}
	var buf, scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, scratch = f.appendFrame(buf[:0], scratch, rec)
	}
	b.SetBytes(int64(len(buf)))
}
