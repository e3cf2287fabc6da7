package casecret_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/kube/casecret"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Two replicas sharing the CA through its Secret on a real API server,
// each with its own data dir and meshca.CA. A rotation published by one
// reaches the other (Follow writes it into its data dir and calls
// reload). Then both rotate at once from the same version: exactly one
// publish wins, the other gets ErrConflict and its data dir is put back on
// the winner's version, so after reloading both sign with one
// intermediate. Each replica's proxy reports are the other's Others.
func TestShareSerializesRotations(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.Namespace(t, "trellis-system", nil)
	type replica struct {
		dir     string
		ca      *meshca.CA
		share   *casecret.Share
		reloads atomic.Int32
	}
	var rs [2]*replica
	for i := range rs {
		r := &replica{dir: filepath.Join(t.TempDir(), "data")}
		if _, err := casecret.Ensure(ctx, c.Client, "trellis-system", "trellis-ca", r.dir, newCA); err != nil {
			t.Fatal(err)
		}
		ca, _, err := meshca.LoadOrCreate(r.dir, td, meshca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r.ca = ca
		r.share = casecret.NewShare(c.Client, "trellis-system", "trellis-ca", r.dir, []string{"cp-a", "cp-b"}[i], testutil.Logger(t))
		if err := r.share.Follow(ctx, func() {
			if _, err := r.ca.Reload(); err == nil {
				r.reloads.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	a, b := rs[0], rs[1]
	if a.ca.IssuerID() != b.ca.IssuerID() {
		t.Fatal("the replicas start on different CAs")
	}

	testutil.RotateThenRace(t, ctx, testutil.SharedReplica{CA: a.ca, Publish: a.share.Publish}, testutil.SharedReplica{CA: b.ca, Publish: b.share.Publish})

	// Reports: each sees the other's proxies, not its own.
	if err := a.share.Report(ctx, []byte(`[{"Instance":"p-a"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := b.share.Report(ctx, []byte(`[{"Instance":"p-b"}]`)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "each replica sees the other's report", func() bool {
		oa, ob := a.share.Others(), b.share.Others()
		return len(oa) == 1 && string(oa[0]) == `[{"Instance":"p-b"}]` && len(ob) == 1 && string(ob[0]) == `[{"Instance":"p-a"}]`
	})
}
