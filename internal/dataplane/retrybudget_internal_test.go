package dataplane

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	b := new(retryBudget)
	b.set(0.2, 10)
	t0 := time.Unix(1000, 0)
	// 100 requests in the first second: 20% + 10 for the first second.
	for range 100 {
		b.request(t0)
	}
	n := 0
	for b.withdraw(t0) {
		n++
	}
	if n != 30 {
		t.Errorf("first second: %d retries, want 30", n)
	}
	// Later seconds add 10 each (up to 10 s' worth) and 20% of their
	// requests.
	t5 := t0.Add(5 * time.Second)
	for range 50 {
		b.request(t5)
	}
	n = 0
	for b.withdraw(t5) {
		n++
	}
	if want := 150/5 + 60 - 30; n != want {
		t.Errorf("sixth second: %d retries, want %d", n, want)
	}
	// Past the window, the old requests and retries are forgotten.
	t20 := t0.Add(20 * time.Second)
	b.request(t20)
	n = 0
	for b.withdraw(t20) {
		n++
	}
	if n != 100 {
		t.Errorf("after the window: %d retries, want 100 (10/s × 10 s, 20%% of 1 request rounds down)", n)
	}
}
