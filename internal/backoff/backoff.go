// Package backoff computes the waits between retries: exponential from a
// minimum to a cap, each wait drawn uniformly from [d/2, d] ("equal
// jitter", as AWS's architecture blog names it), so clients that failed
// together, as every proxy does when the control plane restarts, do not
// retry together, while none waits less than half the schedule.
//
// It only computes durations; callers wait with their own timers, so they
// stay cancellable and can use an injected clock. Any package may import
// it; it must not import other internal packages.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is one retry loop's schedule: the wait before retry n (from 0)
// is Min·2ⁿ capped at Max, jittered into [d/2, d]. Min must be positive; a
// Max below Min means Min. The zero attempt count is the start. A Backoff
// is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the wait before the next retry and counts it.
func (b *Backoff) Next() time.Duration {
	d := Jitter(Delay(b.Min, b.Max, b.attempt))
	b.attempt++
	return d
}

// Reset starts the schedule again from Min, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Delay is the wait before retry attempt (from 0) without jitter:
// lo·2^attempt, capped at hi (an hi below lo means lo).
func Delay(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 0; i < attempt && d > 0 && d < hi; i++ {
		if d > hi/2 {
			return hi
		}
		d *= 2
	}
	return d
}

// Jitter returns a duration drawn uniformly from [d/2, d].
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}
