package testutil

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/backoff"
)

// EventuallyTimeout is how long Eventually polls: long enough for a config
// push, a certificate and a reconnect on a loaded CI machine, and for a
// telemetry spool to drain.
const EventuallyTimeout = 20 * time.Second

// Eventually polls cond until it holds, failing the test with "timed out
// waiting for <what>" after EventuallyTimeout. It polls at once, then after
// 1ms doubling to 10ms, so waits that end quickly (a queue draining under
// backpressure) stay quick. Use it for what happens asynchronously (a
// pushed config, a counted request), never to wait out a fixed delay.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, EventuallyTimeout, what, cond)
}

// EventuallyWithin is Eventually with its own timeout, for waits known to
// be longer (a Prometheus scrape interval, a CA rotation).
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for n := 0; !cond(); n++ {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(backoff.Delay(time.Millisecond, 10*time.Millisecond, n))
	}
}
