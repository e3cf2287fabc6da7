package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{})
	})
}

func mustOpen(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(key, value string) store.Op {
	return store.Op{Type: store.OpPut, Key: key, Value: []byte(value), IfModRevision: store.AnyRevision}
}

func mustTxn(t testing.TB, s *Store, ops ...store.Op) int64 {
	t.Helper()
	rev, err := s.Txn(t.Context(), ops...)
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	return rev
}

func TestReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trellis.db")
	s := mustOpen(t, path, Options{})
	created := mustTxn(t, s, put("a", "1"), put("b", "1"))
	mustTxn(t, s, put("b", "2"))
	last := mustTxn(t, s, put("c", "1"))
	mustTxn(t, s, store.Op{Type: store.OpDelete, Key: "c", IfModRevision: last})
	before, beforeRev, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = mustOpen(t, path, Options{})
	after, afterRev, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if afterRev != beforeRev || afterRev != 4 {
		t.Fatalf("List revision after reopen = %d, want %d (before) and 4", afterRev, beforeRev)
	}
	if got, want := fmt.Sprint(after), fmt.Sprint(before); got != want {
		t.Fatalf("List after reopen = %s, want %s", got, want)
	}
	if rev, err := s.Revision(t.Context()); err != nil || rev != 4 {
		t.Fatalf("Revision after reopen = %d, %v; want 4", rev, err)
	}
	if rev := mustTxn(t, s, put("b", "3")); rev != 5 {
		t.Fatalf("first Txn after reopen = %d, want 5", rev)
	}
	kv, err := s.Get(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "3" || kv.CreateRevision != created || kv.ModRevision != 5 {
		t.Fatalf("Get(b) = %+v, want value 3, create %d, mod 5", kv, created)
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trellis.db")
	mustOpen(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Fatalf("file mode = %v, want -rw-------", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		opts Options
		want string
	}{
		{"missing parent", filepath.Join(dir, "nope", "trellis.db"), Options{}, "no such file"},
		{"negative history", filepath.Join(dir, "a.db"), Options{History: -1}, "History"},
		{"negative buffer", filepath.Join(dir, "b.db"), Options{WatchBuffer: -1}, "WatchBuffer"},
	}
	for _, tt := range tests {
		s, err := Open(tt.path, tt.opts)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded, want error", tt.name)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "bolt open "+tt.path+": ") || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: error %q, want prefix %q and mention of %q", tt.name, msg, "bolt open "+tt.path, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open with bad options created the file (stat: %v)", err)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trellis.db")
	mustOpen(t, path, Options{})
	done := make(chan error, 1)
	go func() {
		s, err := Open(path, Options{})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "another process") {
			t.Fatalf("second Open: %v, want a lock error", err)
		}
	case <-time.After(10 * lockTimeout):
		t.Fatal("second Open on a locked file hangs")
	}
}

func TestTxnValidation(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{})
	long := strings.Repeat("k", 40000)
	tests := []struct {
		name string
		ops  []store.Op
		want string
	}{
		{"empty key", []store.Op{put("", "v")}, "bolt txn: op 0: empty key"},
		{"unknown type", []store.Op{put("a", "v"), {Type: 7, Key: "x"}}, `bolt txn: op 1 on key "x": unknown op type 7`},
		{"bad condition", []store.Op{{Type: store.OpPut, Key: "x", IfModRevision: -2}}, "invalid IfModRevision -2"},
		{"duplicate key", []store.Op{put("x", "1"), put("x", "2")}, `op 1: key "x" appears more than once`},
		{"key too long", []store.Op{put(long, "1")}, "exceeds the limit"},
	}
	for _, tt := range tests {
		_, err := s.Txn(t.Context(), tt.ops...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Txn error %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	if rev, _ := s.Revision(t.Context()); rev != 0 {
		t.Errorf("Revision = %d after invalid txns, want 0", rev)
	}
}

func TestConflictErrorNamesKey(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{})
	rev := mustTxn(t, s, put("k", "v"))
	_, err := s.Txn(t.Context(), store.Op{Type: store.OpPut, Key: "k", IfModRevision: rev + 1})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn: %v, want ErrConflict", err)
	}
	want := fmt.Sprintf(`bolt txn: key "k" has mod revision %d, want %d: store: revision conflict`, rev, rev+1)
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
}

func TestSlowWatcherIsClosed(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{WatchBuffer: 4})
	slow, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}

	// The fast watcher reads after every write, so only the slow one lags.
	const writes = 20
	for i := range writes {
		errc := make(chan error, 1)
		go func() {
			_, err := s.Txn(t.Context(), put("k", fmt.Sprint(i)))
			errc <- err
		}()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Txn: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Txn blocked by a slow watcher")
		}
		if ev, ok := <-fast; !ok || ev.Revision != int64(i+1) {
			t.Fatalf("fast watcher got %+v (open %v), want revision %d", ev, ok, i+1)
		}
	}

	// The slow watcher keeps what fitted in its buffer, then sees the close.
	var got []int64
	for ev := range slow {
		got = append(got, ev.Revision)
	}
	if want := []int64{1, 2, 3, 4}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slow watcher received revisions %v, want %v then close", got, want)
	}
}

func TestReplayDoesNotCountAsLag(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{WatchBuffer: 2})
	for i := range 10 {
		mustTxn(t, s, put("k", fmt.Sprint(i)))
	}
	ch, err := s.Watch(t.Context(), "", 1)
	if err != nil {
		t.Fatal(err)
	}
	rev := mustTxn(t, s, put("k", "live"))
	for want := int64(2); want <= rev; want++ {
		if ev, ok := <-ch; !ok || ev.Revision != want {
			t.Fatalf("got %+v (open %v), want revision %d", ev, ok, want)
		}
	}
}

func TestCompactedAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trellis.db")
	s := mustOpen(t, path, Options{})
	for i := range 3 {
		mustTxn(t, s, put("k", fmt.Sprint(i)))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, path, Options{})
	for _, from := range []int64{1, 2} {
		if _, err := s.Watch(t.Context(), "", from); !errors.Is(err, store.ErrCompacted) {
			t.Errorf("Watch(from %d) after reopen: %v, want ErrCompacted", from, err)
		}
	}
	fromCurrent, err := s.Watch(t.Context(), "", 3)
	if err != nil {
		t.Fatalf("Watch(from current 3): %v", err)
	}
	fromNow, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatalf("Watch(from now): %v", err)
	}
	rev := mustTxn(t, s, put("k", "new"))
	for _, ch := range []<-chan store.Event{fromCurrent, fromNow} {
		if ev := <-ch; ev.Revision != rev || string(ev.KV.Value) != "new" {
			t.Errorf("event = %+v, want the write at %d", ev, rev)
		}
	}
}

func TestHistoryBound(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{History: 4})
	for i := range 6 {
		mustTxn(t, s, put("k", fmt.Sprint(i)))
	}
	// Revisions 1 and 2 fell out of a 4-event ring: watching from 1 would
	// need revision 2.
	if _, err := s.Watch(t.Context(), "", 1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch(from 1): %v, want ErrCompacted", err)
	}
	ch, err := s.Watch(t.Context(), "", 2)
	if err != nil {
		t.Fatalf("Watch(from 2): %v", err)
	}
	for want := int64(3); want <= 6; want++ {
		if ev := <-ch; ev.Revision != want {
			t.Fatalf("replayed revision %d, want %d", ev.Revision, want)
		}
	}

	// A transaction only partly held in the ring cannot be replayed.
	mustTxn(t, s, put("x", "1"), put("y", "1"), put("z", "1")) // 7
	mustTxn(t, s, put("x", "2"), put("y", "2"))                // 8 evicts two events of 7
	if _, err := s.Watch(t.Context(), "", 6); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch(from 6): %v, want ErrCompacted", err)
	}
	if _, err := s.Watch(t.Context(), "", 7); err != nil {
		t.Fatalf("Watch(from 7): %v", err)
	}
}

func TestWatchFutureRevision(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "trellis.db"), Options{})
	ch, err := s.Watch(t.Context(), "", 2)
	if err != nil {
		t.Fatal(err)
	}
	mustTxn(t, s, put("k", "1"))
	mustTxn(t, s, put("k", "2"))
	rev := mustTxn(t, s, put("k", "3"))
	if ev := <-ch; ev.Revision != rev {
		t.Fatalf("first event at revision %d, want %d", ev.Revision, rev)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Open(filepath.Join(t.TempDir(), "trellis.db"), Options{WatchBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	mustTxn(t, s, put("k", "v"))
	// Watches end in each way: cancelled, overflowed, closed with the store.
	for i := range 60 {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		if _, err := s.Watch(ctx, "", 0); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			cancel()
		}
		if i%3 == 1 {
			mustTxn(t, s, put("k", "v"), put("k2", "v")) // overflows WatchBuffer 1
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkTxnPut(b *testing.B) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "trellis.db"), Options{})
	value := []byte(strings.Repeat("v", 128))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%04d", i)
	}
	i := 0
	for b.Loop() {
		op := store.Op{Type: store.OpPut, Key: keys[i%len(keys)], Value: value, IfModRevision: store.AnyRevision}
		if _, err := s.Txn(b.Context(), op); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
