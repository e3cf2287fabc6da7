package controlclient_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlclient"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// The reconnect waits, which also pace a proxy's failover from one control
// plane address to the next: after the stream ends each wait is drawn
// from [d/2, d] of a schedule doubling from 250 ms, capped at 3 s; a
// stream that stays up for more than a minute starts the schedule again,
// one that drops sooner does not (a control plane that accepts and drops
// streams is not retried faster and faster). Timed on a fake clock.
func TestReconnectBackoff(t *testing.T) {
	const lo, hi = 250 * time.Millisecond, 3 * time.Second
	cp, certs := catalogCerts(t)
	addr, dataDir := cp.GRPCAddr(), cp.DataDir
	restart := func() {
		cp = meshtest.StartControlPlane(t, controlplane.Config{DataDir: dataDir, GRPCAddr: addr})
	}
	fake := clock.NewFake(time.Now())
	waits := make(chan time.Duration, 100)
	target := &recordingTarget{applied: make(chan *pb.Snapshot, 100), states: make(chan error, 100)}
	cc := &controlclient.Client{
		Addr: addr, Certs: certs, Target: target, Clock: fake,
		Log:   slog.New(retryHandler{testutil.Logger(t).Handler(), waits}),
		Hello: &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	awaitUp := func(what string) {
		t.Helper()
		for {
			if err := await(t, target.states, what); err == nil {
				return
			}
		}
	}
	// next returns the wait the client drew after a failed stream.
	next := func() time.Duration {
		t.Helper()
		return await(t, waits, "a reconnect wait")
	}
	// sleepOut moves the clock past d (again, should the timer start after
	// an advance) until the client has tried again: up, or the next wait.
	sleepOut := func(d time.Duration) (up bool, nextWait time.Duration) {
		t.Helper()
		fake.Advance(d + time.Millisecond)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case w := <-waits:
				return false, w
			case err := <-target.states:
				if err == nil {
					return true, 0
				}
			case <-time.After(50 * time.Millisecond):
				fake.Advance(d + time.Millisecond)
			}
		}
		t.Fatal("the client did not try again within 10s")
		return false, 0
	}
	// within checks that wait, the n-th of a schedule (from 0), is in
	// [Delay/2, Delay] (the log rounds it to 1 ms).
	within := func(n int, wait time.Duration) {
		t.Helper()
		d := backoff.Delay(lo, hi, n)
		if wait < d/2-time.Millisecond || wait > d+time.Millisecond {
			t.Errorf("wait %d: %s, want within [%s, %s]", n, wait, d/2, d)
		}
	}

	awaitUp("the first stream")
	cp.Stop(t)
	var drawn []time.Duration
	w := next()
	for n := 0; n < 7; n++ {
		within(n, w)
		drawn = append(drawn, w)
		up, nw := sleepOut(w)
		if up {
			t.Fatal("stream up with the control plane stopped")
		}
		w = nw
	}
	jittered := false
	for n, d := range drawn {
		jittered = jittered || d.Round(time.Millisecond) != backoff.Delay(lo, hi, n)
	}
	if !jittered {
		t.Errorf("waits %v are the schedule itself: no jitter", drawn)
	}

	within(7, w)

	// Back up for less than a minute: the schedule goes on at the cap.
	restart()
	for {
		up, nw := sleepOut(w)
		if up {
			break
		}
		w = nw // gRPC may still be waiting out its own redial backoff
		within(7, w)
	}
	cp.Stop(t)
	if w = next(); w < hi/2-time.Millisecond {
		t.Errorf("after a stream up for no time, wait %s: the schedule started again, want it at the cap [%s, %s]", w, hi/2, hi)
	}

	// Up for over a minute: the next wait is from the start of the schedule.
	restart()
	for {
		up, nw := sleepOut(w)
		if up {
			break
		}
		w = nw
	}
	fake.Advance(time.Minute + time.Second)
	cp.Stop(t)
	within(0, next())
	t.Logf("waits while the control plane was down: %v", drawn)
}

// retryHandler passes records on, and sends the retry_in of each "config
// stream down" record to waits.
type retryHandler struct {
	slog.Handler
	waits chan<- time.Duration
}

func (h retryHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "config stream down") {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "retry_in" {
				if d, err := time.ParseDuration(a.Value.String()); err == nil {
					h.waits <- d
				}
				return false
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h retryHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return retryHandler{h.Handler.WithAttrs(as), h.waits}
}

func (h retryHandler) WithGroup(g string) slog.Handler {
	return retryHandler{h.Handler.WithGroup(g), h.waits}
}
