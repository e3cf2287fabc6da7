package main

import "testing"

func TestPct(t *testing.T) {
	ns := []int64{1e6, 2e6, 3e6, 4e6, 5e6, 6e6, 7e6, 8e6, 9e6, 10e6}
	for _, tc := range []struct {
		p    float64
		want float64
	}{{50, 5}, {90, 9}, {99, 10}, {99.9, 10}, {10, 1}} {
		if got := pct(ns, tc.p); got != tc.want {
			t.Errorf("pct(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("pct(nil) = %v, want 0", got)
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want spread
	}{
		{[]float64{3, 1, 2}, spread{2, 1, 3}},
		{[]float64{4, 1, 2, 3}, spread{2.5, 1, 4}},
		{nil, spread{}},
	} {
		if got := spreadOf(tc.xs); got != tc.want {
			t.Errorf("spreadOf(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if got, want := (spread{1.5, 1, 2}).format(1), "1.5 (1.0-2.0)"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	if got, want := (spread{1.5, 1.5, 1.5}).format(1), "1.5"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{1: "1", 999: "999", 1000: "1,000", 12345: "12,345", 1000000: "1,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
