package eventlog_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

func TestEventSize(t *testing.T) {
	// The benchmarks' figures assume a typical event of about 300 bytes.
	if n := proto.Size(testEvent(12345)); n < 250 || n > 350 {
		t.Errorf("test event is %d bytes encoded, want about 300", n)
	}
}

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", eventlog.DirName)
	l := openLog(t, dir, 0)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o700); got != want {
		t.Errorf("dir mode: got %04o, want %04o", got, want)
	}
	if got, want := segments(t, dir), []string{filepath.Join(dir, "00000000000000000001.seg")}; !slices.Equal(got, want) {
		t.Errorf("segments: got %q, want %q", got, want)
	}
	if got := l.LastIndex(); got != 0 {
		t.Errorf("LastIndex of a new log: got %d, want 0", got)
	}
	if recs, err := l.Read(1, 10); err != nil || len(recs) != 0 {
		t.Errorf("Read of a new log: got %d records, %v; want none", len(recs), err)
	}
	if last, err := l.Append(); err != nil || last != 0 {
		t.Errorf("Append(): got %d, %v; want 0, nil", last, err)
	}
}

func TestAppendReadAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	// About five records per segment.
	l := openLog(t, dir, 2000)
	var want []*pb.Event
	for i, n := range []int{1, 3, 7, 1, 20, 2, 16} {
		evs := testEvents(len(want)+1, n)
		want = append(want, evs...)
		if got := mustAppend(t, l, evs...); got != uint64(len(want)) {
			t.Fatalf("append %d: got last index %d, want %d", i, got, len(want))
		}
	}
	total := uint64(len(want))
	if got := l.LastIndex(); got != total {
		t.Fatalf("LastIndex: got %d, want %d", got, total)
	}

	segs := segments(t, dir)
	if len(segs) < 8 {
		t.Fatalf("got %d segments for %d records with 2000-byte segments, want at least 8", len(segs), total)
	}
	// Each segment is named after its first record and stays within the
	// size unless one record is bigger.
	for _, p := range segs {
		frames := parseFrames(t, p)
		if got, want := filepath.Base(p), fmt.Sprintf("%020d.seg", frames[0].index); got != want {
			t.Errorf("segment %s starts with record %d, want it named %s", got, frames[0].index, want)
		}
		if fi, _ := os.Stat(p); fi.Size() > 2000 {
			t.Errorf("segment %s is %d bytes, want at most 2000", p, fi.Size())
		}
	}

	all, err := l.Read(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all, 1, want)

	rep, err := eventlog.Verify(dir)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != total || rep.Segments != len(segs) || rep.LastHash != all[len(all)-1].Hash || rep.TornBytes != 0 {
		t.Errorf("Verify: got %+v, want %d records in %d segments, last hash %x", rep, total, len(segs), all[len(all)-1].Hash)
	}

	// Every window, including ones that cross segments and run past the end.
	for from := uint64(0); from <= total+1; from++ {
		for _, max := range []int{0, 1, 4, 7, 100} {
			recs, err := l.Read(from, max)
			if err != nil {
				t.Fatalf("Read(%d, %d): %v", from, max, err)
			}
			start := max64(from, 1)
			n := 0
			if start <= total {
				n = min(max, int(total-start+1))
			}
			if len(recs) != n {
				t.Fatalf("Read(%d, %d): got %d records, want %d", from, max, len(recs), n)
			}
			if n > 0 {
				checkRecords(t, recs, start, want[start-1:start-1+uint64(n)])
			}
		}
	}
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// checkRecords checks that recs are records first.. holding want, chained.
func checkRecords(t *testing.T, recs []telemetry.Record, first uint64, want []*pb.Event) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.Index != first+uint64(i) {
			t.Fatalf("record %d: got index %d, want %d", i, r.Index, first+uint64(i))
		}
		if !equalEvents(r.Event, want[i]) {
			t.Fatalf("record %d: got event %v, want %v", r.Index, r.Event, want[i])
		}
		if i > 0 && r.Hash == recs[i-1].Hash {
			t.Fatalf("record %d has the hash of the one before it", r.Index)
		}
	}
}

func TestReopenContinuesIndexAndChain(t *testing.T) {
	dir := t.TempDir()
	logger, _ := newLogger(t)
	l, err := eventlog.Open(dir, eventlog.Options{SegmentBytes: 1500, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, testEvents(1, 12)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := eventlog.Verify(dir)
	if err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir, 1500)
	if got := l.LastIndex(); got != 12 {
		t.Fatalf("LastIndex after reopen: got %d, want 12", got)
	}
	if got := mustAppend(t, l, testEvents(13, 9)...); got != 21 {
		t.Fatalf("append after reopen: got last index %d, want 21", got)
	}
	recs, err := l.Read(1, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, 1, testEvents(1, 21))
	if recs[11].Hash != before.LastHash {
		t.Errorf("record 12's hash changed across reopen")
	}
	after, err := eventlog.Verify(dir)
	if err != nil {
		t.Fatalf("Verify after reopen: %v", err)
	}
	if after.Records != 21 || after.LastHash != recs[20].Hash {
		t.Errorf("Verify after reopen: got %+v, want 21 records ending in %x", after, recs[20].Hash)
	}
}

func TestOpenLocksTheDirectory(t *testing.T) {
	dir := t.TempDir()
	openLog(t, dir, 0)
	if l, err := eventlog.Open(dir, eventlog.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("second Open: got %v, want an in-use error", err)
	}
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 64<<10)
	const writers, appends = 8, 100
	var wg sync.WaitGroup
	lasts := make([][]uint64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				// 1 to 3 events, each tagged with its writer and number.
				n := 1 + i%3
				evs := make([]*pb.Event, n)
				for j := range evs {
					evs[j] = testEvent(i)
					evs[j].Attributes = map[string]string{"writer": fmt.Sprint(w), "n": fmt.Sprintf("%d.%d", i, j)}
				}
				last, err := l.Append(evs...)
				if err != nil {
					t.Error(err)
					return
				}
				lasts[w] = append(lasts[w], last)
			}
		})
	}
	// Readers and waiters run alongside.
	stop := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		var next uint64 = 1
		for {
			recs, err := l.Read(next, 50)
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range recs {
				if r.Index != next {
					t.Errorf("reader: got record %d, want %d", r.Index, next)
					return
				}
				next++
			}
			if len(recs) == 0 {
				select {
				case <-l.Wait(next - 1):
				case <-stop:
					return
				}
			}
		}
	})
	wg.Wait()
	close(stop)
	rg.Wait()

	var total uint64
	for i := range appends {
		total += writers * uint64(1+i%3)
	}
	if got := l.LastIndex(); got != total {
		t.Fatalf("LastIndex: got %d, want %d", got, total)
	}
	recs, err := l.Read(1, int(total))
	if err != nil {
		t.Fatal(err)
	}
	// Each writer's events are in the log once, in its order, and each
	// Append's events are consecutive, ending at the index it returned.
	byIndex := map[uint64]*pb.Event{}
	seen := map[string]bool{}
	for _, r := range recs {
		byIndex[r.Index] = r.Event
		key := r.Event.Attributes["writer"] + "/" + r.Event.Attributes["n"]
		if seen[key] {
			t.Fatalf("event %s appears twice", key)
		}
		seen[key] = true
	}
	for w, ls := range lasts {
		for i, last := range ls {
			n := 1 + i%3
			for j := range n {
				ev := byIndex[last-uint64(n-1-j)]
				if got, want := ev.Attributes["writer"]+"/"+ev.Attributes["n"], fmt.Sprintf("%d/%d.%d", w, i, j); got != want {
					t.Fatalf("record %d: got event %s, want %s", last-uint64(n-1-j), got, want)
				}
			}
		}
	}
	if _, err := eventlog.Verify(dir); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestWait(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	isClosed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	w0, w0b, w2 := l.Wait(0), l.Wait(0), l.Wait(2)
	if isClosed(w0) || isClosed(w2) {
		t.Fatal("Wait on an empty log: channel closed before any append")
	}
	mustAppend(t, l, testEvent(1))
	if !isClosed(w0) || !isClosed(w0b) {
		t.Error("Wait(0): not closed after record 1 was appended")
	}
	if isClosed(w2) {
		t.Error("Wait(2): closed after record 1 only")
	}
	if !isClosed(l.Wait(0)) {
		t.Error("Wait(0) after record 1: want a closed channel at once")
	}
	w1 := l.Wait(1)
	if isClosed(w1) {
		t.Error("Wait(1) with last index 1: closed")
	}
	mustAppend(t, l, testEvent(2))
	if !isClosed(w1) {
		t.Error("Wait(1): not closed after record 2")
	}
	if isClosed(w2) {
		t.Error("Wait(2): closed after record 2 only")
	}
	mustAppend(t, l, testEvent(3), testEvent(4))
	if !isClosed(w2) {
		t.Error("Wait(2): not closed after records 3 and 4")
	}
}

func TestClose(t *testing.T) {
	dir := t.TempDir()
	l, err := eventlog.Open(dir, eventlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, testEvent(1))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Append(testEvent(2)); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
	if _, err := l.Read(1, 1); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Read after Close: got %v, want ErrClosed", err)
	}
	// The directory lock is released.
	l2 := openLog(t, dir, 0)
	if got := l2.LastIndex(); got != 1 {
		t.Errorf("LastIndex after reopen: got %d, want 1", got)
	}
}

func TestAppendRejects(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	if _, err := l.Append(testEvent(1), nil); err == nil {
		t.Error("Append with a nil event: no error")
	}
	big := testEvent(1)
	big.Reason = strings.Repeat("x", eventlog.MaxEventBytes)
	if _, err := l.Append(big); err == nil {
		t.Error("Append of an event over MaxEventBytes: no error")
	}
	if got := l.LastIndex(); got != 0 {
		t.Errorf("LastIndex after rejected appends: got %d, want 0", got)
	}
}

func TestLargeRecordGetsItsOwnSegment(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1000)
	big := testEvent(2)
	big.Reason = strings.Repeat("r", 5000)
	mustAppend(t, l, testEvent(1), big, testEvent(3))
	recs, err := l.Read(1, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, 1, []*pb.Event{testEvent(1), big, testEvent(3)})
	if got := len(segments(t, dir)); got != 3 {
		t.Errorf("got %d segments, want 3", got)
	}
	if _, err := eventlog.Verify(dir); err != nil {
		t.Error(err)
	}
}
