package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when a test steps it. Timers and
// tickers fire in deadline order during Advance: a NewTimer's or
// NewTicker's channel receives the fake time (buffered, as time.Timer's),
// an AfterFunc's f runs in its own goroutine. A ticker that is due
// several times within one Advance fires once, as a time.Ticker drops the
// ticks a slow receiver misses; its next tick stays on its period.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer // timers and tickers
	// waiters are woken when a timer is added (BlockUntil).
	waiters []chan struct{}
}

// NewFake returns a fake clock stopped at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer makes a timer that fires when the clock reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	return f.add(d, 0, nil)
}

// AfterFunc makes a timer that runs fn when the clock reaches now+d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	return f.add(d, 0, fn)
}

// NewTicker makes a ticker that fires every d of fake time, first at
// now+d. It panics if d <= 0, as time.NewTicker does.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	return fakeTicker{f.add(d, d, nil)}
}

// add schedules a timer at now+d; period > 0 makes it a ticker.
func (f *Fake) add(d, period time.Duration, fn func()) *fakeTimer {
	t := &fakeTimer{clock: f, period: period, fn: fn}
	if fn == nil {
		t.c = make(chan time.Time, 1)
	}
	f.mu.Lock()
	t.at = f.now.Add(d)
	f.timers = append(f.timers, t)
	f.wakeLocked()
	f.mu.Unlock()
	if d <= 0 {
		f.Advance(0)
	}
	return t
}

func (f *Fake) wakeLocked() {
	for _, w := range f.waiters {
		close(w)
	}
	f.waiters = nil
}

// Advance moves the clock forward by d, firing every timer and ticker
// due by then in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	now := f.now
	type firing struct {
		t  *fakeTimer
		at time.Time
	}
	var due []firing
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.at.After(now) {
			kept = append(kept, t)
			continue
		}
		due = append(due, firing{t, t.at})
		if t.period > 0 {
			// The first tick after now: the ones in between are dropped.
			t.at = t.at.Add((now.Sub(t.at)/t.period + 1) * t.period)
			kept = append(kept, t)
		}
	}
	for i := len(kept); i < len(f.timers); i++ {
		f.timers[i] = nil
	}
	f.timers = kept
	// Fired with the lock held (the sends never block), so that a Stop
	// that returned sees no tick delivered after it.
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, x := range due {
		x.t.fire(now)
	}
}

// Set moves the clock to t (backwards too, for tests of clock skew),
// firing the timers due by then.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	d := t.Sub(f.now)
	if d < 0 {
		f.now = t
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.Advance(d)
}

// Timers is the number of timers waiting to fire, counting every ticker
// not stopped.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// BlockUntil waits until at least n timers wait to fire (a ticker counts
// until it is stopped), so that a test advances the clock only once the
// code under test is waiting on it.
func (f *Fake) BlockUntil(n int) {
	for {
		f.mu.Lock()
		if len(f.timers) >= n {
			f.mu.Unlock()
			return
		}
		w := make(chan struct{})
		f.waiters = append(f.waiters, w)
		f.mu.Unlock()
		<-w
	}
}

// remove takes t off the list; false when it was not waiting.
func (f *Fake) remove(t *fakeTimer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removeLocked(t)
}

func (f *Fake) removeLocked(t *fakeTimer) bool {
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return true
		}
	}
	return false
}

type fakeTimer struct {
	clock  *Fake
	at     time.Time
	period time.Duration // > 0 for a ticker
	c      chan time.Time
	fn     func()
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) fire(now time.Time) {
	if t.fn != nil {
		go t.fn()
		return
	}
	select {
	case t.c <- now:
	default:
	}
}

func (t *fakeTimer) Stop() bool { return t.clock.remove(t) }

func (t *fakeTimer) Reset(d time.Duration) bool {
	active := t.clock.remove(t)
	f := t.clock
	f.mu.Lock()
	t.at = f.now.Add(d)
	f.timers = append(f.timers, t)
	f.wakeLocked()
	f.mu.Unlock()
	if d <= 0 {
		f.Advance(0)
	}
	return active
}

// fakeTicker is a fakeTimer with a period. As with a time.Ticker since Go
// 1.23, no tick due before a Stop or Reset is received after it.
type fakeTicker struct{ t *fakeTimer }

func (k fakeTicker) C() <-chan time.Time { return k.t.c }

func (k fakeTicker) Stop() {
	f := k.t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(k.t)
	k.t.drain()
}

func (k fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	f := k.t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(k.t)
	k.t.drain()
	k.t.period = d
	k.t.at = f.now.Add(d)
	f.timers = append(f.timers, k.t)
	f.wakeLocked()
}

func (t *fakeTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
