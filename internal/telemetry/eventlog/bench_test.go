package eventlog_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// The end-to-end target is 50,000 events/s through proxy ->
// collector -> file sink; the log is one stage of that and must be far
// faster. Both benchmarks report events/s with every Append fsynced, and
// MB/s of records written.

// BenchmarkAppendBatch100 appends batches of 100 typical events (about 300
// bytes each) from one goroutine: one write and one fsync per batch.
func BenchmarkAppendBatch100(b *testing.B) {
	l := openLog(b, b.TempDir(), 0)
	batch := testEvents(1, 100)
	b.SetBytes(recordBytes(batch))
	for b.Loop() {
		if _, err := l.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendParallel appends batches of 10 events from 32 goroutines
// per CPU, as many proxy streams do: group commit shares each write and
// fsync among the appends queued while the previous one ran.
func BenchmarkAppendParallel(b *testing.B) {
	l := openLog(b, b.TempDir(), 0)
	batch := testEvents(1, 10)
	b.SetBytes(recordBytes(batch))
	b.SetParallelism(32)
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			if _, err := l.Append(batch...); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

// recordBytes is the size of the events' records on disk: each event plus
// 48 bytes of framing, index and hash.
func recordBytes(evs []*pb.Event) int64 {
	var n int64
	for _, ev := range evs {
		n += int64(proto.Size(ev)) + 48
	}
	return n
}

// BenchmarkRead reads a 100,000-record log in calls of 1,000 records, as a
// sink catching up does.
func BenchmarkRead(b *testing.B) {
	l := openLog(b, b.TempDir(), 4<<20)
	const total = 100_000
	for i := 0; i < total; i += 1000 {
		if _, err := l.Append(testEvents(i+1, 1000)...); err != nil {
			b.Fatal(err)
		}
	}
	var n int
	for b.Loop() {
		for from := uint64(1); from <= total; from += 1000 {
			recs, err := l.Read(from, 1000)
			if err != nil || len(recs) != 1000 {
				b.Fatalf("Read(%d, 1000): %d records, %v", from, len(recs), err)
			}
			n += len(recs)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
