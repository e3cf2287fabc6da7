// Package storetest is the conformance suite for store.Store backends: the
// contract every backend must pass (store/bolt's TestConformance runs it).
// A backend's tests call Run with a function that opens a fresh, empty
// store; only tests should import this package.
//
// It must not depend on any backend: backends import it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/store"
)

// waitTimeout bounds every wait for a watch event, so a broken backend fails
// instead of hanging the test binary.
const waitTimeout = 10 * time.Second

// compactionBudget is how many events the compaction test writes before it
// concludes the backend never compacts. Backends must keep less history
// than this in their test configuration.
const compactionBudget = 20000

// Run runs the conformance suite. open must return a new, empty store each
// time it is called; it is called from parallel subtests. Run closes each
// store when its subtest ends, so open need not, and a backend may answer a
// second Close with nil or store.ErrClosed.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PutGet", testPutGet},
		{"ValuesAreCopies", testValuesAreCopies},
		{"ListOrderAndPrefix", testListOrderAndPrefix},
		{"Revisions", testRevisions},
		{"CreateOnlyConflict", testCreateOnlyConflict},
		{"ExactRevisionConflict", testExactRevisionConflict},
		{"ConflictWritesNothing", testConflictWritesNothing},
		{"Delete", testDelete},
		{"NoOpTxn", testNoOpTxn},
		{"InvalidOps", testInvalidOps},
		{"WatchFromNow", testWatchFromNow},
		{"WatchFromPast", testWatchFromPast},
		{"WatchFromCurrent", testWatchFromCurrent},
		{"WatchFromListRevision", testWatchFromListRevision},
		{"WatchWhileWriting", testWatchWhileWriting},
		{"WatchCompacted", testWatchCompacted},
		{"WatchPrefix", testWatchPrefix},
		{"WatchCancel", testWatchCancel},
		{"CloseClosesWatches", testCloseClosesWatches},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

func put(key, value string) store.Op {
	return store.Op{Type: store.OpPut, Key: key, Value: []byte(value), IfModRevision: store.AnyRevision}
}

func putIf(key, value string, rev int64) store.Op {
	return store.Op{Type: store.OpPut, Key: key, Value: []byte(value), IfModRevision: rev}
}

func del(key string) store.Op {
	return store.Op{Type: store.OpDelete, Key: key, IfModRevision: store.AnyRevision}
}

func delIf(key string, rev int64) store.Op {
	return store.Op{Type: store.OpDelete, Key: key, IfModRevision: rev}
}

func mustTxn(t *testing.T, s store.Store, ops ...store.Op) int64 {
	t.Helper()
	rev, err := s.Txn(t.Context(), ops...)
	if err != nil {
		t.Fatalf("Txn(%v): %v", ops, err)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func mustRevision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func mustWatch(t *testing.T, s store.Store, prefix string, from int64) <-chan store.Event {
	t.Helper()
	ch, err := s.Watch(t.Context(), prefix, from)
	if err != nil {
		t.Fatalf("Watch(%q, %d): %v", prefix, from, err)
	}
	return ch
}

func wantNotFound(t *testing.T, s store.Store, key string) {
	t.Helper()
	if kv, err := s.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q) = %+v, %v; want ErrNotFound", key, kv, err)
	}
}

func wantConflict(t *testing.T, s store.Store, ops ...store.Op) {
	t.Helper()
	if rev, err := s.Txn(t.Context(), ops...); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn(%v) = %d, %v; want ErrConflict", ops, rev, err)
	}
}

// next returns the next event on ch, failing if ch closes or stays silent.
func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want an event")
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatalf("no watch event after %v", waitTimeout)
		return store.Event{}
	}
}

// wantEvent reads the next event and checks its type, key, value and revision.
func wantEvent(t *testing.T, ch <-chan store.Event, typ store.EventType, key, value string, rev int64) store.Event {
	t.Helper()
	ev := next(t, ch)
	if ev.Type != typ || ev.KV.Key != key || string(ev.KV.Value) != value || ev.Revision != rev || ev.KV.ModRevision != rev {
		t.Fatalf("event = {type %d key %q value %q rev %d mod %d}, want {type %d key %q value %q rev %d mod %d}",
			ev.Type, ev.KV.Key, ev.KV.Value, ev.Revision, ev.KV.ModRevision, typ, key, value, rev, rev)
	}
	return ev
}

// wantClosed drains ch and fails unless it closes in time.
func wantClosed(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("watch channel still open after %v", waitTimeout)
		}
	}
}

func keys(kvs []store.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

func testPutGet(t *testing.T, s store.Store) {
	wantNotFound(t, s, "a")

	rev1 := mustTxn(t, s, put("a", "one"))
	kv := mustGet(t, s, "a")
	if kv.Key != "a" || string(kv.Value) != "one" || kv.CreateRevision != rev1 || kv.ModRevision != rev1 {
		t.Fatalf("Get(a) = %+v, want value one, create and mod revision %d", kv, rev1)
	}

	rev2 := mustTxn(t, s, put("a", "two"))
	kv = mustGet(t, s, "a")
	if string(kv.Value) != "two" || kv.CreateRevision != rev1 || kv.ModRevision != rev2 {
		t.Fatalf("after update Get(a) = %+v, want value two, create %d, mod %d", kv, rev1, rev2)
	}

	mustTxn(t, s, put("empty", ""))
	if kv := mustGet(t, s, "empty"); len(kv.Value) != 0 {
		t.Fatalf("Get(empty) value = %q, want empty", kv.Value)
	}
}

func testValuesAreCopies(t *testing.T, s store.Store) {
	in := []byte("original")
	mustTxn(t, s, store.Op{Type: store.OpPut, Key: "k", Value: in, IfModRevision: store.AnyRevision})
	copy(in, "XXXXXXXX")

	kv := mustGet(t, s, "k")
	if string(kv.Value) != "original" {
		t.Fatalf("Get(k) = %q after caller changed its Put buffer, want original", kv.Value)
	}
	kv.Value[0] = 'Y'
	if kv := mustGet(t, s, "k"); string(kv.Value) != "original" {
		t.Fatalf("Get(k) = %q after caller changed a returned value, want original", kv.Value)
	}
	kvs, _, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	kvs[0].Value[0] = 'Z'
	if kv := mustGet(t, s, "k"); string(kv.Value) != "original" {
		t.Fatalf("Get(k) = %q after caller changed a listed value, want original", kv.Value)
	}
}

func testListOrderAndPrefix(t *testing.T, s store.Store) {
	for _, k := range []string{"b", "a/2", "ab", "a/10", "a/1", "a"} {
		mustTxn(t, s, put(k, "v-"+k))
	}
	wantRev := mustRevision(t, s)

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a", "a/1", "a/10", "a/2", "ab", "b"}},
		{"a/", []string{"a/1", "a/10", "a/2"}},
		{"a", []string{"a", "a/1", "a/10", "a/2", "ab"}},
		{"a/1", []string{"a/1", "a/10"}},
		{"b", []string{"b"}},
		{"c", []string{}},
	}
	for _, tt := range tests {
		kvs, rev, err := s.List(t.Context(), tt.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tt.prefix, err)
		}
		if got := keys(kvs); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) keys = %q, want %q", tt.prefix, got, tt.want)
		}
		if rev != wantRev {
			t.Errorf("List(%q) revision = %d, want %d", tt.prefix, rev, wantRev)
		}
		for _, kv := range kvs {
			if string(kv.Value) != "v-"+kv.Key || kv.ModRevision == 0 || kv.CreateRevision != kv.ModRevision {
				t.Errorf("List(%q): %+v, want value v-%s and equal nonzero revisions", tt.prefix, kv, kv.Key)
			}
		}
	}
}

func testRevisions(t *testing.T, s store.Store) {
	if rev := mustRevision(t, s); rev != 0 {
		t.Fatalf("empty store Revision = %d, want 0", rev)
	}
	if rev := mustTxn(t, s, put("a", "1")); rev != 1 {
		t.Fatalf("first Txn revision = %d, want 1", rev)
	}
	if rev := mustTxn(t, s, put("b", "1")); rev != 2 {
		t.Fatalf("second Txn revision = %d, want 2", rev)
	}

	rev := mustTxn(t, s, put("a", "2"), put("c", "1"), del("b"))
	if rev != 3 {
		t.Fatalf("multi-op Txn revision = %d, want 3", rev)
	}
	for _, k := range []string{"a", "c"} {
		if kv := mustGet(t, s, k); kv.ModRevision != rev {
			t.Errorf("Get(%q).ModRevision = %d, want shared txn revision %d", k, kv.ModRevision, rev)
		}
	}
	wantNotFound(t, s, "b")
	if got := mustRevision(t, s); got != rev {
		t.Errorf("Revision = %d, want %d", got, rev)
	}
	if _, lrev, err := s.List(t.Context(), ""); err != nil || lrev != rev {
		t.Errorf("List revision = %d, %v; want %d", lrev, err, rev)
	}
}

func testCreateOnlyConflict(t *testing.T, s store.Store) {
	rev := mustTxn(t, s, putIf("k", "first", 0))
	wantConflict(t, s, putIf("k", "second", 0))
	if kv := mustGet(t, s, "k"); string(kv.Value) != "first" || kv.ModRevision != rev {
		t.Fatalf("Get(k) = %+v after failed create, want first at %d", kv, rev)
	}
	if got := mustRevision(t, s); got != rev {
		t.Fatalf("Revision = %d after conflict, want %d", got, rev)
	}
}

func testExactRevisionConflict(t *testing.T, s store.Store) {
	rev1 := mustTxn(t, s, put("k", "v1"))
	rev2 := mustTxn(t, s, putIf("k", "v2", rev1))
	wantConflict(t, s, putIf("k", "stale", rev1))
	wantConflict(t, s, putIf("missing", "x", rev2))
	wantConflict(t, s, delIf("k", rev1))
	wantConflict(t, s, delIf("missing", rev2))

	if kv := mustGet(t, s, "k"); string(kv.Value) != "v2" || kv.ModRevision != rev2 {
		t.Fatalf("Get(k) = %+v, want v2 at %d", kv, rev2)
	}
	wantNotFound(t, s, "missing")
	if got := mustRevision(t, s); got != rev2 {
		t.Fatalf("Revision = %d after conflicts, want %d", got, rev2)
	}
}

func testConflictWritesNothing(t *testing.T, s store.Store) {
	rev := mustTxn(t, s, put("x", "keep"), put("y", "keep"))
	ch := mustWatch(t, s, "", 0)

	// The failing condition comes last, after ops that would have succeeded.
	wantConflict(t, s, put("new", "v"), del("y"), putIf("x", "changed", rev+100))
	wantConflict(t, s, put("new", "v"), put("x", "changed"), del("y"), putIf("absent", "v", rev))

	wantNotFound(t, s, "new")
	for _, k := range []string{"x", "y"} {
		if kv := mustGet(t, s, k); string(kv.Value) != "keep" || kv.ModRevision != rev {
			t.Errorf("Get(%q) = %+v, want keep at %d", k, kv, rev)
		}
	}
	if got := mustRevision(t, s); got != rev {
		t.Errorf("Revision = %d, want %d", got, rev)
	}
	// Had the failed txn emitted events, they would come before this one.
	mustTxn(t, s, put("after", "1"))
	wantEvent(t, ch, store.EventPut, "after", "1", rev+1)
}

func testDelete(t *testing.T, s store.Store) {
	rev1 := mustTxn(t, s, put("k", "v"), put("other", "v"))
	rev2 := mustTxn(t, s, delIf("k", rev1))
	if rev2 != rev1+1 {
		t.Fatalf("delete revision = %d, want %d", rev2, rev1+1)
	}
	wantNotFound(t, s, "k")
	if kv := mustGet(t, s, "other"); kv.ModRevision != rev1 {
		t.Errorf("Get(other).ModRevision = %d, want untouched %d", kv.ModRevision, rev1)
	}

	// Recreating a deleted key starts a new life.
	rev3 := mustTxn(t, s, putIf("k", "again", 0))
	if kv := mustGet(t, s, "k"); kv.CreateRevision != rev3 {
		t.Errorf("recreated key CreateRevision = %d, want %d", kv.CreateRevision, rev3)
	}
	if kvs, _, err := s.List(t.Context(), ""); err != nil || !slices.Equal(keys(kvs), []string{"k", "other"}) {
		t.Errorf("List = %q, %v; want [k other]", keys(kvs), err)
	}
}

func testNoOpTxn(t *testing.T, s store.Store) {
	rev := mustTxn(t, s, put("k", "v"))
	ch := mustWatch(t, s, "", 0)

	for _, ops := range [][]store.Op{
		nil,
		{del("missing")},
		{delIf("missing", 0)},
		{del("missing"), del("missing2")},
	} {
		got, err := s.Txn(t.Context(), ops...)
		if err != nil {
			t.Fatalf("no-op Txn(%v): %v", ops, err)
		}
		if got != rev {
			t.Errorf("no-op Txn(%v) = %d, want current revision %d", ops, got, rev)
		}
	}
	if got := mustRevision(t, s); got != rev {
		t.Fatalf("Revision = %d after no-op txns, want %d", got, rev)
	}
	mustTxn(t, s, put("after", "1"))
	wantEvent(t, ch, store.EventPut, "after", "1", rev+1)
}

func testInvalidOps(t *testing.T, s store.Store) {
	rev := mustTxn(t, s, put("k", "v"))
	for _, tt := range []struct {
		name string
		ops  []store.Op
	}{
		{"empty key", []store.Op{put("ok", "v"), put("", "v")}},
		{"zero type", []store.Op{put("ok", "v"), {Key: "x", IfModRevision: store.AnyRevision}}},
		{"unknown type", []store.Op{put("ok", "v"), {Type: 99, Key: "x", IfModRevision: store.AnyRevision}}},
	} {
		_, err := s.Txn(t.Context(), tt.ops...)
		if err == nil || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Txn error = %v, want a validation error", tt.name, err)
		}
	}
	wantNotFound(t, s, "ok")
	if got := mustRevision(t, s); got != rev {
		t.Errorf("Revision = %d after invalid txns, want %d", got, rev)
	}
}

func testWatchFromNow(t *testing.T, s store.Store) {
	mustTxn(t, s, put("before", "x"))
	ch := mustWatch(t, s, "", 0)

	rev1 := mustTxn(t, s, put("k", "v1"))
	ev := wantEvent(t, ch, store.EventPut, "k", "v1", rev1)
	if ev.KV.CreateRevision != rev1 {
		t.Errorf("put event CreateRevision = %d, want %d", ev.KV.CreateRevision, rev1)
	}
	rev2 := mustTxn(t, s, put("k", "v2"))
	ev = wantEvent(t, ch, store.EventPut, "k", "v2", rev2)
	if ev.KV.CreateRevision != rev1 {
		t.Errorf("update event CreateRevision = %d, want %d", ev.KV.CreateRevision, rev1)
	}
	rev3 := mustTxn(t, s, del("k"))
	// A delete event carries the deleted value and the deleting revision.
	wantEvent(t, ch, store.EventDelete, "k", "v2", rev3)
}

func testWatchFromPast(t *testing.T, s store.Store) {
	rev1 := mustTxn(t, s, put("a", "1"))
	rev2 := mustTxn(t, s, put("b", "1"), put("c", "1"))
	rev3 := mustTxn(t, s, del("a"))

	ch := mustWatch(t, s, "", rev1)
	var got []store.Event
	for range 3 {
		got = append(got, next(t, ch))
	}
	// Events within one revision may come in any order.
	slices.SortStableFunc(got, func(x, y store.Event) int {
		if x.Revision != y.Revision {
			return int(x.Revision - y.Revision)
		}
		return strings.Compare(x.KV.Key, y.KV.Key)
	})
	want := []struct {
		typ store.EventType
		key string
		rev int64
	}{
		{store.EventPut, "b", rev2},
		{store.EventPut, "c", rev2},
		{store.EventDelete, "a", rev3},
	}
	for i, w := range want {
		if g := got[i]; g.Type != w.typ || g.KV.Key != w.key || g.Revision != w.rev {
			t.Errorf("replayed event %d = {type %d key %q rev %d}, want {type %d key %q rev %d}",
				i, g.Type, g.KV.Key, g.Revision, w.typ, w.key, w.rev)
		}
	}
	rev4 := mustTxn(t, s, put("d", "live"))
	wantEvent(t, ch, store.EventPut, "d", "live", rev4)
}

func testWatchFromCurrent(t *testing.T, s store.Store) {
	mustTxn(t, s, put("a", "1"))
	cur := mustTxn(t, s, put("a", "2"))
	ch := mustWatch(t, s, "", cur)
	rev := mustTxn(t, s, put("a", "3"))
	// The first event must be the new one, not a replay of cur.
	wantEvent(t, ch, store.EventPut, "a", "3", rev)
}

// testWatchFromListRevision checks the documented list-then-watch pattern
// while a writer runs: every write after the listing arrives exactly once.
func testWatchFromListRevision(t *testing.T, s store.Store) {
	const writes = 40
	ctx := t.Context()
	// Start at revision 1: fromRevision 0 would mean "from now".
	mustTxn(t, s, put("w/k", "0"))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= writes; i++ {
			if _, err := s.Txn(ctx, put("w/k", fmt.Sprint(i))); err != nil {
				t.Errorf("Txn: %v", err)
				return
			}
		}
	})
	kvs, rev, err := s.List(ctx, "w/")
	if err != nil {
		t.Fatal(err)
	}
	ch := mustWatch(t, s, "w/", rev)
	wg.Wait()

	if len(kvs) > 0 && kvs[0].ModRevision != rev {
		t.Fatalf("listed w/k at %d, list revision %d", kvs[0].ModRevision, rev)
	}
	for want := rev + 1; want <= writes+1; want++ {
		wantEvent(t, ch, store.EventPut, "w/k", fmt.Sprint(want-1), want)
	}
}

// testWatchWhileWriting starts watches from recent revisions while writers
// run; each must see every later revision exactly once, in order, whether it
// came from history or live.
func testWatchWhileWriting(t *testing.T, s store.Store) {
	const (
		writers  = 4
		txns     = 50
		total    = writers * txns
		watchers = 20
	)
	ctx := t.Context()
	mustTxn(t, s, put("k/start", ""))
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range txns {
				if _, err := s.Txn(ctx, put(fmt.Sprintf("k/%d", w), fmt.Sprint(i))); err != nil {
					t.Errorf("Txn: %v", err)
					return
				}
			}
		})
	}
	for i := range watchers {
		wg.Go(func() {
			rev, err := s.Revision(ctx)
			if err != nil {
				t.Errorf("Revision: %v", err)
				return
			}
			from := max(rev-int64(i%4), 1)
			ch, err := s.Watch(ctx, "k/", from)
			if err != nil {
				t.Errorf("Watch(from %d): %v", from, err)
				return
			}
			for want := from + 1; want <= total+1; want++ {
				select {
				case ev, ok := <-ch:
					if !ok {
						t.Errorf("watch from %d closed before revision %d", from, want)
						return
					}
					if ev.Revision != want {
						t.Errorf("watch from %d: got revision %d, want %d", from, ev.Revision, want)
						return
					}
				case <-time.After(waitTimeout):
					t.Errorf("watch from %d: no revision %d after %v", from, want, waitTimeout)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testWatchCompacted(t *testing.T, s store.Store) {
	first := mustTxn(t, s, put("k", "0"))
	ops := make([]store.Op, 100)
	for written := 0; ; written += len(ops) {
		if written > compactionBudget {
			t.Fatalf("Watch from revision %d still allowed after %d events; the backend must bound its history", first, written)
		}
		for i := range ops {
			ops[i] = put(fmt.Sprintf("k/%03d", i), fmt.Sprint(written))
		}
		mustTxn(t, s, ops...)

		ctx, cancel := context.WithCancel(t.Context())
		_, err := s.Watch(ctx, "", first)
		cancel()
		if errors.Is(err, store.ErrCompacted) {
			break
		}
		if err != nil {
			t.Fatalf("Watch(from %d): %v, want nil or ErrCompacted", first, err)
		}
	}

	// Recovery as documented: list, then watch from the list's revision.
	_, rev, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	ch := mustWatch(t, s, "", rev)
	after := mustTxn(t, s, put("k", "after"))
	wantEvent(t, ch, store.EventPut, "k", "after", after)
}

func testWatchPrefix(t *testing.T, s store.Store) {
	mustTxn(t, s, put("z", "x"))
	past := mustTxn(t, s, put("b/0", "x"), put("a/0", "x"))
	mustTxn(t, s, put("ab", "x"))
	mustTxn(t, s, put("a/past", "x"))

	// A replayed watch filters history as well as live events.
	replay := mustWatch(t, s, "a/", past-1)
	wantEvent(t, replay, store.EventPut, "a/0", "x", past)
	wantEvent(t, replay, store.EventPut, "a/past", "x", past+2)

	ch := mustWatch(t, s, "a/", 0)
	rev1 := mustTxn(t, s, put("a/1", "v"))
	mustTxn(t, s, put("b/1", "v"))
	mustTxn(t, s, put("ab", "v"))
	mustTxn(t, s, put("a", "v"))
	rev2 := mustTxn(t, s, put("a/2", "v"), put("b/2", "v"))
	for _, c := range []<-chan store.Event{ch, replay} {
		wantEvent(t, c, store.EventPut, "a/1", "v", rev1)
		wantEvent(t, c, store.EventPut, "a/2", "v", rev2)
	}
}

func testWatchCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	other := mustWatch(t, s, "", 0)
	cancel()
	wantClosed(t, ch)

	// The store and its other watches carry on.
	rev := mustTxn(t, s, put("k", "v"))
	wantEvent(t, other, store.EventPut, "k", "v", rev)
}

func testCloseClosesWatches(t *testing.T, s store.Store) {
	past := mustTxn(t, s, put("k", "v"))
	mustTxn(t, s, put("k", "v"))
	fromNow := mustWatch(t, s, "", 0)
	fromPast := mustWatch(t, s, "", past)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantClosed(t, fromNow)
	wantClosed(t, fromPast)

	ctx := t.Context()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.List(ctx, ""); !errors.Is(err, store.ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Txn(ctx, put("k", "v2")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Txn after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(ctx, "", 0); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Revision(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Revision after Close: %v, want ErrClosed", err)
	}
}

// testConcurrentWriters runs writers that each own a key and together bump a
// shared counter with compare-and-swap, while a watcher follows along.
func testConcurrentWriters(t *testing.T, s store.Store) {
	const (
		writers = 8
		txns    = 50
		total   = writers * txns
	)
	ctx := t.Context()
	ch := mustWatch(t, s, "", 0)
	events := make(chan []store.Event, 1)
	go func() {
		var got []store.Event
		for ev := range ch {
			if got = append(got, ev); len(got) == 2*total {
				break
			}
		}
		events <- got
	}()

	var (
		mu   sync.Mutex
		revs = make(map[int64]bool)
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < txns; {
				var ifRev int64
				n := 0
				switch kv, err := s.Get(ctx, "counter"); {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					t.Errorf("Get(counter): %v", err)
					return
				default:
					ifRev = kv.ModRevision
					if _, err := fmt.Sscan(string(kv.Value), &n); err != nil {
						t.Errorf("counter value %q: %v", kv.Value, err)
						return
					}
				}
				rev, err := s.Txn(ctx,
					putIf("counter", fmt.Sprint(n+1), ifRev),
					put(fmt.Sprintf("writer/%d", w), fmt.Sprint(i)))
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					t.Errorf("Txn: %v", err)
					return
				}
				mu.Lock()
				if revs[rev] {
					t.Errorf("revision %d returned to two transactions", rev)
				}
				revs[rev] = true
				mu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	if rev := mustRevision(t, s); rev != total {
		t.Errorf("Revision = %d, want %d", rev, total)
	}
	for rev := int64(1); rev <= total; rev++ {
		if !revs[rev] {
			t.Errorf("no transaction got revision %d", rev)
		}
	}
	if kv := mustGet(t, s, "counter"); string(kv.Value) != fmt.Sprint(total) || kv.ModRevision != total {
		t.Errorf("counter = %q at %d, want %d at %d", kv.Value, kv.ModRevision, total, total)
	}
	for w := range writers {
		if kv := mustGet(t, s, fmt.Sprintf("writer/%d", w)); string(kv.Value) != fmt.Sprint(txns-1) {
			t.Errorf("writer/%d = %q, want %d", w, kv.Value, txns-1)
		}
	}

	// Two events per transaction, delivered in revision order, the counter
	// counting up. The watcher reads as it goes, so it must not fall behind.
	var got []store.Event
	select {
	case got = <-events:
	case <-time.After(waitTimeout):
		t.Fatalf("watcher did not receive %d events in %v", 2*total, waitTimeout)
	}
	if len(got) != 2*total {
		t.Fatalf("watch closed after %d events, want %d", len(got), 2*total)
	}
	for i, ev := range got {
		if want := int64(i/2 + 1); ev.Revision != want {
			t.Fatalf("event %d has revision %d, want %d", i, ev.Revision, want)
		}
		if ev.KV.Key == "counter" && string(ev.KV.Value) != fmt.Sprint(ev.Revision) {
			t.Fatalf("counter event at revision %d has value %q", ev.Revision, ev.KV.Value)
		}
	}
}
