package sharedca_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/controlplane/sharedca"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/bolt"
	"github.com/trellismesh/trellis/internal/testutil"
)

var td = spiffeid.RequireTrustDomainFromString("trellis.test")

var newCA = testutil.NewSharedFiles(td)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newKEK(t *testing.T) *sharedca.KEK {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	k, err := sharedca.NewKEK(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Replicas starting together on one store end with one CA: exactly one
// created it, all data dirs hold the same files, and the store holds none
// of them in the clear. Another key-encryption key cannot open them, and
// says so.
func TestEnsureOneCASealed(t *testing.T) {
	ctx := context.Background()
	st, kek := openStore(t), newKEK(t)
	const n = 6
	dirs := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dirs[i] = filepath.Join(t.TempDir(), "data")
		wg.Go(func() { created[i], errs[i] = sharedca.Ensure(ctx, st, kek, dirs[i], newCA) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Fatalf("%d replicas created the CA, want 1", creators)
	}
	want, _ := os.ReadFile(filepath.Join(dirs[0], "ca.crt"))
	tok, _ := os.ReadFile(filepath.Join(dirs[0], "admin.token"))
	for _, d := range dirs[1:] {
		got, _ := os.ReadFile(filepath.Join(d, "ca.crt"))
		gotTok, _ := os.ReadFile(filepath.Join(d, "admin.token"))
		if !bytes.Equal(got, want) || !bytes.Equal(gotTok, tok) {
			t.Errorf("%s holds another CA or admin token", d)
		}
	}
	kvs, _, err := st.List(ctx, "/ca/files/")
	if err != nil || len(kvs) < 4 {
		t.Fatalf("stored files: %d, %v", len(kvs), err)
	}
	for _, kv := range kvs {
		if bytes.Contains(kv.Value, []byte("BEGIN")) || bytes.Contains(kv.Value, bytes.TrimSpace(tok)) {
			t.Errorf("%s is stored in the clear", kv.Key)
		}
	}
	if _, err := sharedca.Ensure(ctx, st, newKEK(t), filepath.Join(t.TempDir(), "data"), newCA); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte("cannot be opened with --ca-kek-file")) {
		t.Errorf("another key: %v", err)
	}
}

// Two replicas on one store, each with its own data dir and CA: a rotation
// published by one reaches the other; two retirements at once from one
// version: one stands, the other gets ErrConflict and ends on the
// winner's CA. Each sees the other's proxy reports.
func TestShareSerializesChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, kek := openStore(t), newKEK(t)
	type replica struct {
		ca    *meshca.CA
		share *sharedca.Share
		seen  atomic.Int32
	}
	var rs [2]*replica
	for i := range rs {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := sharedca.Ensure(ctx, st, kek, dir, newCA); err != nil {
			t.Fatal(err)
		}
		ca, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{ca: ca, share: sharedca.New(st, kek, dir, []string{"cp-a", "cp-b"}[i], testutil.Logger(t))}
		if err := r.share.Follow(ctx, func() {
			if _, err := r.ca.Reload(); err == nil {
				r.seen.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	a, b := rs[0], rs[1]
	testutil.RotateThenRace(t, ctx, testutil.SharedReplica{CA: a.ca, Publish: a.share.Publish}, testutil.SharedReplica{CA: b.ca, Publish: b.share.Publish})

	if err := a.share.Report(ctx, []meshca.ProxyCert{{Instance: "p-a", Connected: true}}); err != nil {
		t.Fatal(err)
	}
	if err := b.share.Report(ctx, []meshca.ProxyCert{{Instance: "p-b", Connected: true}}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "each replica sees the other's report", func() bool {
		oa, ob := a.share.Others(), b.share.Others()
		return len(oa) == 1 && oa[0].Instance == "p-b" && len(ob) == 1 && ob[0].Instance == "p-a"
	})
}

// The key-encryption key file: 0600, 32 bytes raw, hex or base64.
func TestLoadKEK(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := bytes.Repeat([]byte{7}, 32)
	for name, p := range map[string]string{
		"raw": write("raw", key, 0o600), "hex": write("hex", []byte(hex.EncodeToString(key)+"\n"), 0o600),
	} {
		if _, err := sharedca.LoadKEK(p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		path, want string
	}{
		"readable by others": {write("open", key, 0o644), "chmod 600"},
		"short":              {write("short", []byte("abc"), 0o600), "32-byte key"},
		"missing":            {filepath.Join(dir, "none"), "--ca-kek-file"},
	} {
		if _, err := sharedca.LoadKEK(tc.path); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
