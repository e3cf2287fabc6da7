package testutil

import (
	"testing"
	"time"
)

// EventuallyTimeout is how long Eventually polls: long enough for a config
// push, a certificate and a reconnect on a loaded CI machine.
const EventuallyTimeout = 10 * time.Second

// Eventually polls cond every 10ms until it holds, failing the test with
// "timed out waiting for <what>" after EventuallyTimeout. Use it for what
// happens asynchronously (a pushed config, a counted request), never to
// wait out a fixed delay.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, EventuallyTimeout, what, cond)
}

// EventuallyWithin is Eventually with its own timeout, for waits known to
// be longer (a Prometheus scrape interval, a CA rotation).
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
