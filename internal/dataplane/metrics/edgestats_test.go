package metrics

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Callers of one service fold into one edge whatever their principal or
// transport; callers without a single service are "unknown".
func TestTrafficStatsFoldsCallers(t *testing.T) {
	m := New()
	front1 := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend", "shop", true, "catalog", "shop")
	front2 := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend-v2", "shop", true, "catalog", "shop")
	frontPlain := m.ForSource("frontend", "", "shop", false, "catalog", "shop")
	ambiguous := m.ForSource("", "spiffe://td/ns/ops/sa/batch", "ops", true, "catalog", "shop")
	plain := m.ForSource("", "", "", false, "catalog", "shop")
	m.ForSource("idle", "spiffe://td/ns/shop/sa/idle", "shop", true, "catalog", "shop")

	front1.edge.record(200, false, 50*time.Microsecond)  // bucket 0 (<= 100µs)
	front1.edge.record(200, false, 100*time.Microsecond) // bucket 0: bounds are inclusive
	front2.edge.record(503, false, 3*time.Millisecond)   // bucket 5 (<= 5ms)
	frontPlain.edge.record(403, true, time.Millisecond)  // bucket 3 (<= 1ms)
	ambiguous.edge.record(500, false, time.Minute)       // +Inf
	plain.edge.record(200, false, 200*time.Microsecond)  // bucket 1

	since := time.Unix(1700000000, 0)
	got := m.TrafficStats("catalog", "shop", since)
	if got.GetService() != "catalog" || got.GetNamespace() != "shop" || !got.GetCountersSince().AsTime().Equal(since) {
		t.Errorf("header: got %s/%s since %v, want catalog/shop since %v", got.GetService(), got.GetNamespace(), got.GetCountersSince().AsTime(), since)
	}
	if !slices.Equal(got.GetLatencyBoundsSeconds(), durationBounds[:]) {
		t.Errorf("bounds: got %v, want %v", got.GetLatencyBoundsSeconds(), durationBounds)
	}
	type edge struct {
		src                              string
		requests, failures, mtls, denied uint64
		buckets                          map[int]uint64
	}
	want := []edge{
		{"ops/unknown", 1, 1, 1, 0, map[int]uint64{len(durationBounds): 1}},
		{"shop/frontend", 4, 1, 3, 1, map[int]uint64{0: 2, 3: 1, 5: 1}},
		{"unknown/unknown", 1, 0, 0, 0, map[int]uint64{1: 1}},
	}
	if len(got.GetEdges()) != len(want) {
		t.Fatalf("edges: got %v, want %d (idle callers left out)", got.GetEdges(), len(want))
	}
	for i, w := range want {
		e := got.GetEdges()[i]
		if src := e.GetSourceNamespace() + "/" + e.GetSourceService(); src != w.src {
			t.Errorf("edge %d: got source %s, want %s", i, src, w.src)
		}
		if e.GetDestinationService() != "catalog" || e.GetDestinationNamespace() != "shop" {
			t.Errorf("edge %d: got destination %s.%s, want catalog.shop", i, e.GetDestinationService(), e.GetDestinationNamespace())
		}
		if e.GetRequests() != w.requests || e.GetFailures() != w.failures || e.GetMtlsRequests() != w.mtls || e.GetDenied() != w.denied {
			t.Errorf("edge %s: got requests %d failures %d mtls %d denied %d, want %d %d %d %d", w.src,
				e.GetRequests(), e.GetFailures(), e.GetMtlsRequests(), e.GetDenied(), w.requests, w.failures, w.mtls, w.denied)
		}
		if len(e.GetLatencyCounts()) != len(durationBounds)+1 {
			t.Fatalf("edge %s: %d latency counts, want %d", w.src, len(e.GetLatencyCounts()), len(durationBounds)+1)
		}
		for b, n := range e.GetLatencyCounts() {
			if n != w.buckets[b] {
				t.Errorf("edge %s bucket %d: got %d, want %d", w.src, b, n, w.buckets[b])
			}
		}
	}
	if (*Metrics)(nil).TrafficStats("catalog", "shop", since) != nil {
		t.Error("nil Metrics: want nil stats (nothing to send)")
	}
}

// Past the cache bound (cowmap.Map.Max) callers the cache starts over: the counters restart,
// and counters_since says so.
func TestTrafficStatsAfterCacheStartsOver(t *testing.T) {
	m := New()
	first := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend", "shop", true, "catalog", "shop")
	first.edge.record(200, false, time.Millisecond)
	since := time.Now().Add(-time.Hour)
	// A small bound (the default's 4096 would take as many inserts, each
	// copying the map): fill the cache to the brim, then one more caller
	// starts it over.
	m.SetMaxCallers(64)
	for i := len(m.sources.Load()); i < m.sources.Max; i++ {
		m.ForSource("c"+strconv.Itoa(i), fmt.Sprintf("spiffe://td/ns/shop/sa/c%d", i), "shop", true, "catalog", "shop")
	}
	m.ForSource("web", "spiffe://td/ns/shop/sa/web", "shop", true, "catalog", "shop")
	got := m.TrafficStats("catalog", "shop", since)
	if at := got.GetCountersSince().AsTime(); !at.After(since) {
		t.Errorf("counters_since after the cache started over: got %v, want later than %v", at, since)
	}
	for _, e := range got.GetEdges() {
		if e.GetSourceService() == "frontend" {
			t.Errorf("edge from before the start-over still reported: %v", e)
		}
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	m := New()
	d := m.Dest(Inbound, "catalog", "shop", "", "", "")
	s := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend", "shop", true, "catalog", "shop")
	start := time.Now()
	d.Request(s, "GET", "/items/42", 200, false, start) // creates the code's counter child
	if n := testing.AllocsPerRun(1000, func() { d.Request(s, "GET", "/items/42", 200, false, start) }); n != 0 {
		t.Errorf("recording a request: %v allocations, want 0", n)
	}
}

func BenchmarkRecordRequest(b *testing.B) {
	m := New()
	d := m.Dest(Inbound, "catalog", "shop", "", "", "")
	s := m.ForSource("frontend", "spiffe://td/ns/shop/sa/frontend", "shop", true, "catalog", "shop")
	start := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Request(s, "GET", "/items/42", 200, false, start)
		}
	})
}
