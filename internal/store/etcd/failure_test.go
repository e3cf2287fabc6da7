package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/etcd"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

func put(key, value string) store.Op {
	return store.Op{Type: store.OpPut, Key: key, Value: []byte(value), IfModRevision: store.AnyRevision}
}

// retry calls fn until it returns nil, for at most within, retrying only
// on store.ErrUnavailable, and returns how long that took.
func retry(t *testing.T, within time.Duration, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s: %v, want nil or store.ErrUnavailable", what, err)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// follower follows every key of a store the way the control plane's
// caches do: list, watch from the list's revision, and on a closed channel
// list and watch again. It checks that every write reaches it once, in
// revision order.
type follower struct {
	s       store.Store
	ch      <-chan store.Event
	rev     int64 // the last revision seen
	values  map[string]string
	seen    map[string]bool // key@revision of the events since the last list
	relists int
}

func follow(t *testing.T, s store.Store) *follower {
	f := &follower{s: s}
	f.relist(t)
	return f
}

func (f *follower) relist(t *testing.T) {
	t.Helper()
	retry(t, 15*time.Second, "relist", func() error {
		kvs, rev, err := f.s.List(t.Context(), "")
		if err != nil {
			return err
		}
		ch, err := f.s.Watch(t.Context(), "", rev)
		if err != nil {
			return err
		}
		f.ch, f.rev, f.values, f.seen = ch, rev, map[string]string{}, map[string]bool{}
		for _, kv := range kvs {
			f.values[kv.Key] = string(kv.Value)
		}
		return nil
	})
}

// await waits until the follower has seen revision rev, relisting when its
// watch closes, and reports whether the watch it had carried on.
func (f *follower) await(t *testing.T, rev int64) (continued bool) {
	t.Helper()
	continued = true
	timeout := time.After(20 * time.Second)
	for f.rev < rev {
		select {
		case ev, ok := <-f.ch:
			if !ok {
				continued = false
				f.relists++
				f.relist(t)
				continue
			}
			// A transaction's events share its revision.
			id := fmt.Sprintf("%s@%d", ev.KV.Key, ev.Revision)
			if ev.Revision < f.rev || f.seen[id] {
				t.Fatalf("event %s after revision %d: delivered twice or out of order", id, f.rev)
			}
			f.seen[id] = true
			f.rev = ev.Revision
			if ev.Type == store.EventPut {
				f.values[ev.KV.Key] = string(ev.KV.Value)
			} else {
				delete(f.values, ev.KV.Key)
			}
		case <-timeout:
			t.Fatalf("follower at revision %d, want %d after 20s", f.rev, rev)
		}
	}
	return continued
}

// TestKillOneMember kills each member of three in turn (SIGKILL), the
// leader among them, and checks that Get, List, Txn and Watch go on with
// the other two: at once when the victim was a follower, after the
// election when it was the leader (calls meanwhile fail with
// store.ErrUnavailable, nothing else). A watch that was open across the
// kill either continues, its events once each and in order (the etcd
// client re-establishes it on another member from its last revision), or
// closes, after which the caller's relist sees every write.
func TestKillOneMember(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s := open(t, c, "")
	ctx := t.Context()
	if _, err := s.Txn(ctx, put("/k", "start")); err != nil {
		t.Fatal(err)
	}
	f := follow(t, s)

	leader := c.Leader()
	victims := []int{(leader + 1) % 3, (leader + 2) % 3, leader}
	for round, victim := range victims {
		role := "follower"
		if victim == leader {
			role = "leader"
		}
		c.Kill(victim)
		value := fmt.Sprintf("round-%d", round)
		within := time.Second
		if role == "leader" {
			within = 15 * time.Second
		}

		var rev int64
		took := retry(t, within, "Txn after killing the "+role, func() error {
			var err error
			rev, err = s.Txn(ctx, put("/k", value), put(fmt.Sprintf("/round/%d", round), role))
			return err
		})
		retry(t, within, "Get", func() error {
			kv, err := s.Get(ctx, "/k")
			if err == nil && (string(kv.Value) != value || kv.ModRevision != rev) {
				t.Fatalf("Get(/k) = %q at %d, want %q at %d", kv.Value, kv.ModRevision, value, rev)
			}
			return err
		})
		retry(t, within, "List", func() error {
			kvs, lrev, err := s.List(ctx, "/round/")
			if err == nil && (len(kvs) != round+1 || lrev < rev) {
				t.Fatalf("List(/round/) = %d keys at revision %d, want %d at %d or later", len(kvs), lrev, round+1, rev)
			}
			return err
		})
		retry(t, within, "Watch from the past", func() error {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, "/k", rev-1)
			if err != nil {
				return err
			}
			select {
			case ev, ok := <-ch:
				if !ok {
					return fmt.Errorf("watch closed: %w", store.ErrUnavailable)
				}
				if ev.Revision != rev || string(ev.KV.Value) != value {
					t.Fatalf("watch from %d: event %q at %d, want %q at %d", rev-1, ev.KV.Value, ev.Revision, value, rev)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("watch from %d: no event after 10s", rev-1)
			}
			return nil
		})
		continued := f.await(t, rev)
		if f.values["/k"] != value {
			t.Fatalf("follower has /k = %q, want %q", f.values["/k"], value)
		}
		t.Logf("member %d (%s) killed: first Txn after %v; the open watch %s",
			victim, role, took.Round(time.Millisecond), map[bool]string{true: "continued", false: "closed and the follower relisted"}[continued])
		if role == "follower" && !continued {
			t.Errorf("the watch closed when a follower died; want it moved to another member")
		}
		c.Restart(victim)
	}
}

// TestQuorumLost kills two members of three: every call fails within the
// request timeout (5 s) with an error wrapping store.ErrUnavailable that
// says the etcd quorum is unreachable, and an open watch closes; after
// the two restart, writes resume and a relist sees them.
func TestQuorumLost(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s := open(t, c, "")
	ctx := t.Context()
	if _, err := s.Txn(ctx, put("/k", "before")); err != nil {
		t.Fatal(err)
	}
	f := follow(t, s)

	leader := c.Leader()
	killed := []int{leader, (leader + 1) % 3}
	for _, i := range killed {
		c.Kill(i)
	}
	const limit = etcd.DefaultRequestTimeout + time.Second
	calls := []struct {
		name string
		fn   func() error
	}{
		{"Txn", func() error { _, err := s.Txn(ctx, put("/k", "during")); return err }},
		{"Get", func() error { _, err := s.Get(ctx, "/k"); return err }},
		{"List", func() error { _, _, err := s.List(ctx, ""); return err }},
		{"Revision", func() error { _, err := s.Revision(ctx); return err }},
		{"Watch", func() error { _, err := s.Watch(ctx, "", 0); return err }},
		{"Txn again", func() error { _, err := s.Txn(ctx, put("/k", "during")); return err }},
	}
	for _, call := range calls {
		start := time.Now()
		err := call.fn()
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "etcd quorum is unreachable") {
			t.Errorf("%s without a quorum: %v; want store.ErrUnavailable saying the etcd quorum is unreachable", call.name, err)
		}
		if took > limit {
			t.Errorf("%s without a quorum failed after %v, want within %v", call.name, took, limit)
		}
		t.Logf("%s without a quorum: failed after %v: %v", call.name, took.Round(time.Millisecond), err)
	}

	// etcd cancels the watches of a member without a leader after three
	// election timeouts (3 s here).
	start := time.Now()
	for closed := false; !closed; {
		select {
		case _, ok := <-f.ch:
			closed = !ok
		case <-time.After(15 * time.Second):
			t.Fatal("the open watch is still open 15s after the quorum was lost")
		}
	}
	t.Logf("the open watch closed %v after the calls above", time.Since(start).Round(time.Millisecond))

	for _, i := range killed {
		c.StartMember(i)
	}
	c.WaitHealthy()
	var rev int64
	took := retry(t, 15*time.Second, "Txn after the restart", func() error {
		var err error
		rev, err = s.Txn(ctx, put("/k", "after"))
		return err
	})
	t.Logf("writes resumed %v after the members were healthy", took.Round(time.Millisecond))
	f.relist(t)
	f.await(t, rev)
	if got := f.values["/k"]; got != "after" {
		t.Errorf("after the restart the follower has /k = %q, want after", got)
	}
	if kv, err := s.Get(ctx, "/k"); err != nil || string(kv.Value) != "after" {
		t.Errorf("Get(/k) = %q, %v; want after", kv.Value, err)
	}
}

// TestPrefixesIsolated: two stores on one cluster with different prefixes
// see only their own keys, in Get, List and Watch; etcd holds each key
// under its store's prefix. Revisions are the cluster's, so one store's
// writes move the other's revision (the documented difference).
func TestPrefixesIsolated(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a, b := open(t, c, "/tenant-a"), open(t, c, "/tenant-b")
	ctx := t.Context()
	wa, err := a.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	revA, err := a.Txn(ctx, put("/k", "a"), put("/only-a", "a"))
	if err != nil {
		t.Fatal(err)
	}
	revB, err := b.Txn(ctx, put("/k", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if revB != revA+1 {
		t.Errorf("b's first write at revision %d, want %d: the revision is the cluster's", revB, revA+1)
	}
	if rev, err := a.Revision(ctx); err != nil || rev != revB {
		t.Errorf("a.Revision = %d, %v; want the cluster's %d", rev, err, revB)
	}
	for _, tt := range []struct {
		s    *etcd.Store
		want string
		keys []string
	}{{a, "a", []string{"/k", "/only-a"}}, {b, "b", []string{"/k"}}} {
		if kv, err := tt.s.Get(ctx, "/k"); err != nil || string(kv.Value) != tt.want {
			t.Errorf("%s: Get(/k) = %q, %v; want %q", tt.s.Prefix(), kv.Value, err, tt.want)
		}
		kvs, _, err := tt.s.List(ctx, "")
		var got []string
		for _, kv := range kvs {
			got = append(got, kv.Key)
		}
		if err != nil || !slices.Equal(got, tt.keys) {
			t.Errorf("%s: List = %q, %v; want %q", tt.s.Prefix(), got, err, tt.keys)
		}
	}
	if _, err := b.Get(ctx, "/only-a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.Get(/only-a) = %v, want ErrNotFound", err)
	}

	// a's watch sees its two events (one revision) and then its next
	// write, never b's.
	rev3, err := a.Txn(ctx, put("/k", "a2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		key string
		rev int64
	}{{"/k", revA}, {"/only-a", revA}, {"/k", rev3}} {
		select {
		case ev := <-wa:
			if ev.KV.Key != want.key || ev.Revision != want.rev {
				t.Errorf("a's watch: %q at %d, want %q at %d", ev.KV.Key, ev.Revision, want.key, want.rev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a's watch: no event after 10s, want %q at %d", want.key, want.rev)
		}
	}

	// The layout in etcd: prefix + key, revisions one above the store's.
	resp, err := c.Client().Get(ctx, "/tenant-", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var raw []string
	for _, kv := range resp.Kvs {
		raw = append(raw, fmt.Sprintf("%s@%d", kv.Key, kv.ModRevision))
	}
	want := []string{fmt.Sprintf("/tenant-a/k@%d", rev3+1), fmt.Sprintf("/tenant-a/only-a@%d", revA+1), fmt.Sprintf("/tenant-b/k@%d", revB+1)}
	if !slices.Equal(raw, want) {
		t.Errorf("keys in etcd = %q, want %q", raw, want)
	}
}
