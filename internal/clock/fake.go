package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when a test steps it. Timers fire in
// deadline order during Advance: a NewTimer's channel receives the fake
// time (buffered, as time.Timer's), an AfterFunc's f runs in its own
// goroutine.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
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
	return f.add(d, nil)
}

// AfterFunc makes a timer that runs fn when the clock reaches now+d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	return f.add(d, fn)
}

func (f *Fake) add(d time.Duration, fn func()) *fakeTimer {
	t := &fakeTimer{clock: f, fn: fn}
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

// Advance moves the clock forward by d, firing every timer due by then
// in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	var due []*fakeTimer
	kept := f.timers[:0]
	for _, t := range f.timers {
		if !t.at.After(now) {
			due = append(due, t)
		} else {
			kept = append(kept, t)
		}
	}
	for i := len(kept); i < len(f.timers); i++ {
		f.timers[i] = nil
	}
	f.timers = kept
	f.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.fire(now)
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

// Timers is the number of timers waiting to fire.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// BlockUntil waits until at least n timers wait to fire, so that a test
// advances the clock only once the code under test is waiting on it.
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
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return true
		}
	}
	return false
}

type fakeTimer struct {
	clock *Fake
	at    time.Time
	c     chan time.Time
	fn    func()
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
