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
