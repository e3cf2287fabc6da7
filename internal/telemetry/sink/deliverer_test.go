package sink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/testutil"
)

func newFileSink(t testing.TB) (Sink, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := Parse("file://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// TestCursorAcrossRestarts: a new Deliverer resumes after the last
// confirmed record; nothing is sent twice when the previous one stopped
// cleanly.
func TestCursorAcrossRestarts(t *testing.T) {
	log := openLog(t)
	s, path := newFileSink(t)
	dir := t.TempDir()
	cfg := DelivererConfig{Name: "file://" + path, Sink: s, Log: log, Dir: dir, MaxBatch: 8, BatchDelay: -1}

	appendEvents(t, log, log, 30)
	d1 := newDeliverer(t, cfg)
	stop := startDeliverer(t, d1)
	awaitCursor(t, d1, 30, 10*time.Second)
	stop()

	b, err := os.ReadFile(filepath.Join(dir, CursorFile(cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	r30, _ := log.Read(30, 1)
	if got, want := string(b), fmt.Sprintf("30 %x\n", r30[0].Hash); got != want {
		t.Errorf("cursor file: got %q, want %q", got, want)
	}

	appendEvents(t, log, log, 20)
	d2 := newDeliverer(t, cfg)
	if got := d2.Stats(); got.Cursor != 30 || got.Lag != 20 {
		t.Errorf("restarted deliverer before Run: %+v, want cursor 30 and lag 20", got)
	}
	startDeliverer(t, d2)
	awaitCursor(t, d2, 50, 10*time.Second)
	if got, want := indexes(readJSONL(t, path)), seq(1, 50); !reflect.DeepEqual(got, want) {
		t.Errorf("file after restart:\n got  %v\n want %v", got, want)
	}

	// Another sink name has a cursor of its own.
	other := cfg
	other.Name = "file:///elsewhere.jsonl"
	if got := newDeliverer(t, other).Stats().Cursor; got != 0 {
		t.Errorf("cursor of a new sink: got %d, want 0", got)
	}
}

// stallingSink passes batches to a sink and, on the stallAt-th, delivers it
// and then hangs until cancelled, as if the confirmation never came (or
// the process died before writing the cursor).
type stallingSink struct {
	Sink
	stallAt int
	calls   atomic.Int32
	stalled chan struct{}
}

func (s *stallingSink) Send(ctx context.Context, recs []telemetry.Record) error {
	if err := s.Sink.Send(ctx, recs); err != nil {
		return err
	}
	if int(s.calls.Add(1)) == s.stallAt {
		close(s.stalled)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// TestUnconfirmedBatchSentAgain: the batch delivered but not confirmed
// before a stop is sent again by the next Deliverer, and nothing else is.
func TestUnconfirmedBatchSentAgain(t *testing.T) {
	log := openLog(t)
	fs, path := newFileSink(t)
	dir := t.TempDir()
	appendEvents(t, log, log, 100)

	s := &stallingSink{Sink: fs, stallAt: 4, stalled: make(chan struct{})}
	cfg := DelivererConfig{Name: "x", Sink: s, Log: log, Dir: dir, MaxBatch: 10}
	d1 := newDeliverer(t, cfg)
	stop := startDeliverer(t, d1)
	select {
	case <-s.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the fourth batch was never sent")
	}
	stop()
	if got := d1.Stats().Cursor; got != 30 {
		t.Fatalf("cursor after the stall: got %d, want 30", got)
	}

	cfg.Sink = fs
	d2 := newDeliverer(t, cfg)
	startDeliverer(t, d2)
	awaitCursor(t, d2, 100, 10*time.Second)
	want := append(seq(1, 40), seq(31, 100)...)
	if got := indexes(readJSONL(t, path)); !reflect.DeepEqual(got, want) {
		t.Errorf("file:\n got  %v\n want %v (31..40 twice)", got, want)
	}
}

// TestCursorChecks: a cursor that does not fit the log stops the
// Deliverer before it sends anything.
func TestCursorChecks(t *testing.T) {
	s, _ := newFileSink(t)
	dir := t.TempDir()
	name := "file:///audit.jsonl"
	cursor := filepath.Join(dir, CursorFile(name))

	log := openLog(t)
	appendEvents(t, log, log, 10)
	r5, _ := log.Read(5, 1)
	if err := writeCursor(cursor, 5, r5[0].Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDeliverer(DelivererConfig{Name: name, Sink: s, Log: log, Dir: dir}); err != nil {
		t.Fatalf("matching cursor: %v", err)
	}

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) telemetry.LogReader
		want  string
	}{
		{"log shorter than the cursor", func(t *testing.T) telemetry.LogReader {
			return openLog(t)
		}, "log ends at 0"},
		{"a different log", func(t *testing.T) telemetry.LogReader {
			l := openLog(t)
			appendEvents(t, l, l, 3)
			l.Append(testEvent(99), testEvent(98), testEvent(97))
			return l
		}, "hash differs"},
		{"damaged cursor file", func(t *testing.T) telemetry.LogReader {
			if err := os.WriteFile(cursor, []byte("5 zz\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return log
		}, "is damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := tc.setup(t)
			_, err := NewDeliverer(DelivererConfig{Name: name, Sink: s, Log: lr, Dir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "delete") {
				t.Errorf("got %v, want an error containing %q and what to do", err, tc.want)
			}
		})
	}
}

// TestBatching: a backlog goes out in batches of MaxBatch; a trickle is
// gathered for BatchDelay into one batch.
func TestBatching(t *testing.T) {
	c := newCollector(t, 0)
	log := openLog(t)
	s, err := Parse(c.srv.URL+"/ingest", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendEvents(t, log, log, 250)
	d := newDeliverer(t, DelivererConfig{Name: "b", Sink: s, Log: log, Dir: t.TempDir(), MaxBatch: 100, BatchDelay: 300 * time.Millisecond})
	startDeliverer(t, d)
	awaitCursor(t, d, 250, 10*time.Second)
	for range 5 {
		appendEvents(t, log, log, 1)
		time.Sleep(10 * time.Millisecond)
	}
	awaitCursor(t, d, 255, 10*time.Second)

	_, batches, _, _ := c.received()
	var sizes []int
	for _, b := range batches {
		sizes = append(sizes, len(b))
	}
	if want := []int{100, 100, 50, 5}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("batch sizes: got %v, want %v", sizes, want)
	}
}

// A short batch waits BatchDelay on the deliverer's clock for more
// records before it goes out.
func TestBatchDelayWaitsOnTheClock(t *testing.T) {
	c := newCollector(t, 0)
	log := openLog(t)
	s, err := Parse(c.srv.URL+"/ingest", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fake := clock.NewFake(time.Now())
	d := newDeliverer(t, DelivererConfig{Name: "b", Sink: s, Log: log, Dir: t.TempDir(), MaxBatch: 100, BatchDelay: time.Second, Clock: fake})
	startDeliverer(t, d)
	appendEvents(t, log, log, 1)
	fake.BlockUntil(1) // waiting for the batch to fill
	fake.Advance(time.Second - time.Millisecond)
	appendEvents(t, log, log, 1)
	if got := d.Stats().Cursor; got != 0 {
		t.Fatalf("cursor short of BatchDelay: got %d, want 0", got)
	}
	fake.Advance(time.Millisecond)
	awaitCursor(t, d, 2, 10*time.Second)
	_, batches, _, _ := c.received()
	if len(batches) != 1 || len(batches[0]) != 2 {
		t.Errorf("batches: got %d (%v), want one of both records", len(batches), batches)
	}
}

// TestRunStopsDuringOutage: cancelling Run while the sink keeps failing
// returns promptly, without moving the cursor.
func TestRunStopsDuringOutage(t *testing.T) {
	log := openLog(t)
	s, err := Parse("http://127.0.0.1:1/unreachable", Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, log, log, 5)
	d := newDeliverer(t, DelivererConfig{Name: "down", Sink: s, Log: log, Dir: t.TempDir(), BatchDelay: -1, MinBackoff: time.Second})
	stop := startDeliverer(t, d)
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats().FailedAttempts == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	stop()
	if el := time.Since(start); el > time.Second {
		t.Errorf("Run took %v to return after cancel", el)
	}
	if st := d.Stats(); st.FailedAttempts == 0 || st.Cursor != 0 || st.Lag != 5 {
		t.Errorf("stats %+v, want failures, cursor 0, lag 5", st)
	}
}

// Retries wait on the deliverer's clock: after a failed batch it waits on
// one timer and sends again only when the clock has moved past the wait.
func TestRetriesWaitOnTheClock(t *testing.T) {
	log := openLog(t)
	s, err := Parse("http://127.0.0.1:1/unreachable", Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, log, log, 3)
	fake := clock.NewFake(time.Now())
	d := newDeliverer(t, DelivererConfig{Name: "down", Sink: s, Log: log, Dir: t.TempDir(), BatchDelay: -1,
		MinBackoff: time.Second, MaxBackoff: 2 * time.Second, Clock: fake})
	startDeliverer(t, d)
	for attempt := uint64(1); attempt <= 3; attempt++ {
		fake.BlockUntil(1) // waiting to retry
		if got := d.Stats().FailedAttempts; got != attempt {
			t.Fatalf("waiting after failure %d: %d failed attempts counted", attempt, got)
		}
		fake.Advance(2 * time.Second) // past the longest wait
		testutil.Eventually(t, "the next attempt", func() bool { return d.Stats().FailedAttempts > attempt })
	}
}
