package resstore

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store/bolt"
)

// TestResourceWatchRelists runs the cache on a real bbolt store with tiny
// watch history and buffers, so the store compacts and drops watchers, and
// checks the cache still converges on what is stored.
func TestResourceWatchRelists(t *testing.T) {
	for _, tc := range []struct {
		name string
		// writeFirst: the writes happen before the watch starts, so its
		// revision is compacted away. Otherwise they happen while the
		// watcher is stuck, so its channel overflows and is closed.
		writeFirst bool
	}{
		{"compacted", true},
		{"watcher dropped", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{History: 2, WatchBuffer: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx := t.Context()
			res := New(st, time.Now)
			if err := res.EnsureDefaultMesh(ctx); err != nil {
				t.Fatal(err)
			}
			c := NewCache(slog.New(slog.NewTextHandler(t.Output(), nil)), nil)
			rev, err := c.Load(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			apply := func(doc string) {
				t.Helper()
				objs, err := resource.Decode([]byte(doc), "test.yaml")
				if err != nil {
					t.Fatal(err)
				}
				if err := resource.Validate(&objs[0]); err != nil {
					t.Fatal(err)
				}
				if _, err := res.Apply(ctx, objs, false); err != nil {
					t.Fatal(err)
				}
			}
			writeAll := func() {
				for i := range 5 {
					apply(fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p%d, namespace: shop}\nspec: {selector: {service: catalog}}\n", i))
				}
				apply("apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: PERMISSIVE}}\n")
			}

			gate := make(chan struct{})
			if tc.writeFirst {
				writeAll()
				close(gate)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.Watch(ctx, st, rev, func() { <-gate })
			}()
			if !tc.writeFirst {
				writeAll()
				close(gate)
			}
			waitCache(t, c, func(m resource.MeshSpec, ps []snapshot.Policy) bool {
				return len(ps) == 5 && m.MTLS.Mode == "PERMISSIVE"
			})

			// The watch keeps working after it recovered.
			kind, _ := resource.LookupKind(resource.KindAuthorizationPolicy)
			if err := res.Delete(ctx, kind, "shop", "p0"); err != nil {
				t.Fatal(err)
			}
			waitCache(t, c, func(_ resource.MeshSpec, ps []snapshot.Policy) bool { return len(ps) == 4 })

			// Closing the store ends the watch.
			st.Close()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("watch still running after the store closed")
			}
		})
	}
}

func waitCache(t *testing.T, c *Cache, ok func(resource.MeshSpec, []snapshot.Policy) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ps, _ := c.State()
		if ok(m, ps) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache holds mesh %s and %d policies", m.MTLS.Mode, len(ps))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
