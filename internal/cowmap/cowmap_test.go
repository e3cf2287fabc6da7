package cowmap

import (
	"sync"
	"testing"
	"time"
)

func TestGetCreatesOnce(t *testing.T) {
	var m Map[string, *int]
	var created int
	var wg sync.WaitGroup
	got := make([]*int, 64)
	for i := range got {
		wg.Go(func() { got[i] = m.Get("k", func() *int { created++; return new(int) }) })
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("create called %d times for one key, want 1", created)
	}
	for i, p := range got {
		if p != got[0] {
			t.Fatalf("reader %d got another value than reader 0", i)
		}
	}
	if n := testing.AllocsPerRun(100, func() { m.Get("k", nil) }); n != 0 {
		t.Errorf("reading a present key: %v allocations, want 0", n)
	}
}

func TestStartsOverPastMax(t *testing.T) {
	m := Map[int, int]{Max: 4}
	before := time.Now()
	for i := range 4 {
		m.Get(i, func() int { return i })
	}
	if len(m.Load()) != 4 || m.Gen() != 0 || !m.StartedOver().IsZero() {
		t.Fatalf("at the bound: %d entries, gen %d, started over %v; want 4, 0, never", len(m.Load()), m.Gen(), m.StartedOver())
	}
	snap := m.Load()
	m.Get(99, func() int { return 99 })
	if cur := m.Load(); len(cur) != 1 || cur[99] != 99 {
		t.Errorf("past the bound: map %v, want only the new key", cur)
	}
	if len(snap) != 4 {
		t.Errorf("a map returned by Load changed after a write: %v", snap)
	}
	if m.Gen() != 1 || m.StartedOver().Before(before) {
		t.Errorf("gen %d, started over %v; want 1 and a time after %v", m.Gen(), m.StartedOver(), before)
	}
}
