// Package clock is the one source of time for code whose timing tests
// control: certificate renewal, ACK timeouts, the drift grace, backoff,
// periodic reports. Production code takes a Clock (nil means Real) and
// never calls time.Now, time.NewTimer, time.NewTicker or time.AfterFunc
// itself where a test would otherwise have to sleep past a real deadline;
// tests pass a *Fake and step it.
//
// It depends on the standard library only.
package clock

import "time"

// Clock tells the time and makes timers. Implementations are safe for
// concurrent use.
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer.
	NewTimer(d time.Duration) Timer
	// AfterFunc is time.AfterFunc: f runs in its own goroutine.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTicker is time.NewTicker: it panics if d <= 0, and a receiver
	// that falls behind misses ticks rather than queueing them.
	NewTicker(d time.Duration) Ticker
}

// Timer is a *time.Timer behind an interface: C is a method, and nil for
// AfterFunc timers.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is a *time.Ticker behind an interface. Stop does not close C;
// Reset panics if d <= 0.
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// Real is the system clock.
func Real() Clock { return realClock{} }

// Or returns c, or Real when c is nil: for config fields whose zero
// value means the system clock.
func Or(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{time.AfterFunc(d, f)}
}

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
