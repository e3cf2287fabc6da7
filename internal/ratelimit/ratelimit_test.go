package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestBucketPerKey(t *testing.T) {
	l := New(10, 5)
	t0 := time.Unix(1_800_000_000, 0)
	allowed := 0
	for range 20 {
		if ok, _ := l.Allow("a", t0); ok {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("a burst of 20 at one instant: %d allowed, want the burst, 5", allowed)
	}
	ok, wait := l.Allow("a", t0)
	if ok || wait != 100*time.Millisecond {
		t.Errorf("empty bucket: ok=%v wait=%v, want a token in 100ms", ok, wait)
	}
	if ok, _ := l.Allow("b", t0); !ok {
		t.Error("another caller is limited by a's bucket")
	}
	// Over 2 s at 10/s: 20 more tokens, no more than the burst at once.
	allowed = 0
	for i := range 200 {
		if ok, _ := l.Allow("a", t0.Add(time.Duration(i)*10*time.Millisecond)); ok {
			allowed++
		}
	}
	if allowed < 19 || allowed > 21 {
		t.Errorf("2 s of requests every 10 ms at 10/s: %d allowed, want about 20", allowed)
	}
}

func TestBounded(t *testing.T) {
	l := New(1, 1)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 3 * MaxKeys {
		l.Allow(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.buckets); n > MaxKeys {
		t.Errorf("%d buckets, want at most %d", n, MaxKeys)
	}
}
