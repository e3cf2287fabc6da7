package emitter

import "time"

// SetTimings shortens reconnect backoff and batch linger for tests; call
// it before Run.
func SetTimings(e *Emitter, minWait, maxWait, linger time.Duration) {
	e.minWait, e.maxWait, e.linger = minWait, maxWait, linger
	e.recheck = minWait
}
