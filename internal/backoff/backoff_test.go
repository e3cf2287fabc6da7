package backoff_test

import (
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/backoff"
)

const ms = time.Millisecond

// The schedules of the retry loops that use the package: each doubles
// from its minimum and stays at its cap.
func TestDelayGrowsToTheCap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lo, hi time.Duration
		want   []time.Duration // attempts 0, 1, ...; the last repeats
	}{
		{"proxy config stream", 250 * ms, 3 * time.Second, []time.Duration{250 * ms, 500 * ms, time.Second, 2 * time.Second, 3 * time.Second}},
		{"first certificate", 250 * ms, 15 * time.Second, []time.Duration{250 * ms, 500 * ms, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second}},
		{"certificate renewal", time.Second, 30 * time.Second, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second}},
		{"sink defaults", 100 * ms, 10 * time.Second, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 10 * time.Second}},
		{"accept errors", 5 * ms, time.Second, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second}},
		{"cap equal to the minimum", time.Second, time.Second, []time.Duration{time.Second}},
		{"cap below the minimum means the minimum", time.Second, 10 * ms, []time.Duration{time.Second}},
		{"huge cap does not overflow", time.Second, time.Duration(1<<63 - 1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []time.Duration
			for n := range len(tc.want) + 3 {
				got = append(got, backoff.Delay(tc.lo, tc.hi, n))
			}
			if tc.want == nil {
				for n := 0; n < 200; n++ {
					if d := backoff.Delay(tc.lo, tc.hi, n); d <= 0 || d > tc.hi || n > 0 && d < backoff.Delay(tc.lo, tc.hi, n-1) {
						t.Fatalf("attempt %d: got %v, want positive, growing, at most %v", n, d, tc.hi)
					}
				}
				return
			}
			want := append(slices.Clone(tc.want), slices.Repeat(tc.want[len(tc.want)-1:], 3)...)
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

// Every wait is in [d/2, d] of its attempt's delay, and the draws cover
// that range (not a constant, not full jitter down to zero).
func TestJitterStaysInRange(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, 3, 250 * ms, 3 * time.Second} {
		lo, hi := d, time.Duration(0)
		for range 2000 {
			got := backoff.Jitter(d)
			if got < d/2 || got > d {
				t.Fatalf("Jitter(%v) = %v, want within [%v, %v]", d, got, d/2, d)
			}
			lo, hi = min(lo, got), max(hi, got)
		}
		if d >= 250*ms && (lo > d/2+d/20 || hi < d-d/20) {
			t.Errorf("Jitter(%v) drew only [%v, %v] in 2000 tries, want about [%v, %v]", d, lo, hi, d/2, d)
		}
	}
}

func TestBackoffNextAndReset(t *testing.T) {
	b := backoff.Backoff{Min: 250 * ms, Max: 3 * time.Second}
	check := func(attempt int) {
		t.Helper()
		d, want := b.Next(), backoff.Delay(b.Min, b.Max, attempt)
		if d < want/2 || d > want {
			t.Errorf("attempt %d: got %v, want within [%v, %v]", attempt, d, want/2, want)
		}
	}
	for n := range 8 {
		check(n)
	}
	b.Reset()
	check(0)
	check(1)
}
