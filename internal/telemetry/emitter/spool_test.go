package emitter

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/testutil"
)

// newOffline is an Emitter on dir that never connects: the tests drive
// spill, refill and ack by hand.
func newOffline(t *testing.T, dir string, memory int) *Emitter {
	t.Helper()
	e, err := New(Options{Addr: "127.0.0.1:1", TLS: nil2tls, SpoolDir: dir, MemoryLimit: memory, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// nil2tls satisfies New; these tests never dial.
var nil2tls = func() *tls.Config { return nil }

func emitN(e *Emitter, n int) {
	for range n {
		e.Emit(&pb.Event{Kind: "authz.deny"})
	}
}

func mustSpill(t *testing.T, e *Emitter) {
	t.Helper()
	if _, err := e.spill(); err != nil {
		t.Fatal(err)
	}
}

func inflightSeqs(e *Emitter) []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s []uint64
	for i := range e.inflight.len() {
		s = append(s, e.inflight.at(i).ev.Seq)
	}
	return s
}

// drain refills and acknowledges until nothing is left, returning the
// seqs in the order the sender would have sent them.
func drain(e *Emitter) []uint64 {
	var out []uint64
	for {
		e.refill()
		s := inflightSeqs(e)
		if len(s) == 0 {
			return out
		}
		out = append(out, s...)
		e.ack(s[len(s)-1])
	}
}

// Events the sender took from memory while a segment was still open must
// not end up inside that segment's range, or a restart would skip them.
func TestSpoolKeepsOrderAcrossMemoryRuns(t *testing.T) {
	dir := t.TempDir()
	e := newOffline(t, dir, 8) // window 2, spill at 4
	emitN(e, 4)
	mustSpill(t, e) // segment [1..4]
	e.refill()
	e.ack(2)
	e.refill() // 3, 4 from disk: the reader caught up
	e.ack(3)
	emitN(e, 2) // 5, 6
	e.refill()  // 5 straight from memory
	if got, want := inflightSeqs(e), []uint64{4, 5}; !slices.Equal(got, want) {
		t.Fatalf("in flight: got %v, want %v", got, want)
	}
	emitN(e, 4) // 7..10; pending 6..10
	mustSpill(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2 := newOffline(t, dir, 8)
	defer e2.Close()
	if got, want := drain(e2), []uint64{4, 5, 6, 7, 8, 9, 10}; !slices.Equal(got, want) {
		t.Fatalf("after restart the sender sends %v, want %v", got, want)
	}
}

// A crash (no Close) loses what was only in memory, never what was
// spooled, and never reuses a sequence number.
func TestCrashKeepsSpooledEventsAndNeverReusesSeqs(t *testing.T) {
	dir := t.TempDir()
	e := newOffline(t, dir, 8)
	emitN(e, 6)
	mustSpill(t, e) // 1..6 on disk
	emitN(e, 2)     // 7, 8 in memory only
	// The process dies: the kernel releases files and the lock.
	e.spool.close()
	// A torn record at the end of the segment, as a crash mid-write leaves.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments: got %v, want one", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3})
	f.Close()

	e2 := newOffline(t, dir, 8)
	defer e2.Close()
	ev := &pb.Event{Kind: "cert.renewed"}
	e2.Emit(ev)
	if want := uint64(1 + reserveBlock); ev.Seq != want {
		t.Errorf("first seq after a crash: got %d, want %d (past the reservation)", ev.Seq, want)
	}
	if got, want := drain(e2), []uint64{1, 2, 3, 4, 5, 6, 1 + reserveBlock}; !slices.Equal(got, want) {
		t.Fatalf("after the crash the sender sends %v, want %v", got, want)
	}
}

// A segment damaged after it was written costs its unread events, which
// are counted; the segments after it are still delivered.
func TestDamagedSegmentIsSkippedAndCounted(t *testing.T) {
	dir := t.TempDir()
	e := newOffline(t, dir, 8)
	defer e.Close()
	e.spool.segMax = 1 // a segment per spill
	emitN(e, 4)
	mustSpill(t, e)
	emitN(e, 4)
	mustSpill(t, e)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 2 {
		t.Fatalf("segments: got %v, want two", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage"), 20)
	f.Close()

	if got, want := drain(e), []uint64{5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	if got := e.dropped[dropSpool].Load(); got != 4 {
		t.Errorf("dropped{reason=spool_error}: got %d, want 4", got)
	}
}

func TestSanitizeRepairsInvalidUTF8(t *testing.T) {
	ev := &pb.Event{Kind: "access", Path: "/a\xffb", Method: "G\xc3", Attributes: map[string]string{"k\xfe": "v", "ok": "x\xff"}}
	if _, err := proto.Marshal(ev); err == nil {
		t.Fatal("proto.Marshal accepted invalid UTF-8; this test no longer tests anything")
	}
	sanitize(ev)
	if _, err := proto.Marshal(ev); err != nil {
		t.Fatalf("after sanitize: %v", err)
	}
	if ev.Path != "/a\uFFFDb" || ev.Method != "G\uFFFD" || ev.Attributes["k\uFFFD"] != "v" || ev.Attributes["ok"] != "x\uFFFD" || len(ev.Attributes) != 2 {
		t.Errorf("sanitized event: got %v", ev)
	}
}
