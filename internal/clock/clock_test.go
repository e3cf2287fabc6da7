package clock

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestFakeTimersFireInOrder(t *testing.T) {
	f := NewFake(t0)
	a, b := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	ran := make(chan time.Time, 1)
	f.AfterFunc(3*time.Second, func() { ran <- f.Now() })
	f.Advance(999 * time.Millisecond)
	select {
	case <-b.C():
		t.Fatal("a 1s timer fired after 999ms")
	default:
	}
	f.Advance(time.Millisecond)
	if got := <-b.C(); !got.Equal(t0.Add(time.Second)) {
		t.Errorf("1s timer fired at %v, want %v", got, t0.Add(time.Second))
	}
	f.Advance(2 * time.Second)
	if got := <-a.C(); !got.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("2s timer delivered %v, want the time of the Advance that fired it", got)
	}
	if got := <-ran; !got.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("AfterFunc ran at %v", got)
	}
	if n := f.Timers(); n != 0 {
		t.Errorf("%d timers left", n)
	}
}

func TestFakeStopAndReset(t *testing.T) {
	f := NewFake(t0)
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Error("Stop of a waiting timer = false")
	}
	f.Advance(time.Hour)
	select {
	case <-tm.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if tm.Reset(time.Minute) {
		t.Error("Reset of a stopped timer = true, want false")
	}
	f.Advance(59 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("a reset timer fired early")
	default:
	}
	f.Advance(time.Second)
	<-tm.C()
}

func TestBlockUntil(t *testing.T) {
	f := NewFake(t0)
	done := make(chan struct{})
	go func() {
		tm := f.NewTimer(time.Minute)
		<-tm.C()
		close(done)
	}()
	f.BlockUntil(1)
	f.Advance(time.Minute)
	<-done
}

func TestRealClock(t *testing.T) {
	c := Or(nil)
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	fired := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(fired) })
	<-fired
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Reset(2 * time.Millisecond)
	<-tk.C()
	tk.Stop()
	if c.Now().IsZero() {
		t.Error("real Now is zero")
	}
}

func TestFakeSet(t *testing.T) {
	f := NewFake(t0)
	tm := f.NewTimer(time.Hour)
	f.Set(t0.Add(-time.Minute)) // backwards: nothing fires
	if !f.Now().Equal(t0.Add(-time.Minute)) || f.Timers() != 1 {
		t.Fatalf("after Set backwards: now %v, %d timers", f.Now(), f.Timers())
	}
	f.Set(t0.Add(time.Hour))
	<-tm.C()
}

// A ticker fires once per period; one Advance past several periods
// delivers one tick (the rest are dropped, as a time.Ticker drops them
// for a slow receiver) and keeps the next tick on the period.
func TestFakeTicker(t *testing.T) {
	f := NewFake(t0)
	tk := f.NewTicker(time.Second)
	noTick := func(when string) {
		t.Helper()
		select {
		case got := <-tk.C():
			t.Fatalf("%s: tick at %v", when, got)
		default:
		}
	}
	f.Advance(999 * time.Millisecond)
	noTick("after 999ms")
	for i := 1; i <= 3; i++ {
		f.Advance(time.Second)
		if got, want := <-tk.C(), t0.Add(time.Duration(i)*time.Second+999*time.Millisecond); !got.Equal(want) {
			t.Fatalf("tick %d: got %v, want %v", i, got, want)
		}
	}
	noTick("after reading every tick")

	f.Advance(3*time.Second + 500*time.Millisecond) // to 7.499s: ticks due at 4s, 5s, 6s, 7s
	<-tk.C()
	noTick("a second receive after one Advance over four periods")
	f.Advance(500 * time.Millisecond)
	noTick("at 7.999s")
	f.Advance(time.Millisecond)
	if got, want := <-tk.C(), t0.Add(8*time.Second); !got.Equal(want) {
		t.Fatalf("tick after the dropped ones: got %v, want %v", got, want)
	}
	if n := f.Timers(); n != 1 {
		t.Errorf("a running ticker: %d timers waiting, want 1", n)
	}

	tk.Reset(time.Minute)
	f.Advance(59 * time.Second)
	noTick("59s after Reset(1m)")
	f.Advance(time.Second)
	<-tk.C()

	f.Advance(time.Minute) // a tick waits unread
	tk.Stop()
	noTick("after Stop")
	f.Advance(time.Hour)
	noTick("an hour after Stop")
	if n := f.Timers(); n != 0 {
		t.Errorf("a stopped ticker: %d timers waiting, want 0", n)
	}
	tk.Reset(time.Second)
	f.Advance(time.Second)
	<-tk.C()
}

func TestFakeTickerBlockUntil(t *testing.T) {
	f := NewFake(t0)
	ticks := make(chan time.Time)
	go func() {
		tk := f.NewTicker(time.Minute)
		defer tk.Stop()
		for range 2 {
			ticks <- <-tk.C()
		}
	}()
	f.BlockUntil(1)
	f.Advance(time.Minute)
	if got := <-ticks; !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("first tick: got %v", got)
	}
	f.Advance(time.Minute)
	if got := <-ticks; !got.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("second tick: got %v", got)
	}
}

func TestTickerPanicsOnNonPositiveInterval(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"real NewTicker", func() { Real().NewTicker(0) }},
		{"fake NewTicker", func() { NewFake(t0).NewTicker(-time.Second) }},
		{"fake Reset", func() { NewFake(t0).NewTicker(time.Second).Reset(0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tc.f()
		})
	}
}
