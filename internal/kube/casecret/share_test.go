package casecret_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
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

	// a rotates and publishes; b follows.
	if err := a.ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := a.share.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "b takes a's rotation", func() bool { return b.ca.IssuerID() == a.ca.IssuerID() && len(b.ca.Roots()) == 2 })

	// Both retire at once from that version: one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range rs {
		wg.Go(func() {
			if _, err := r.ca.RetireOld(); err != nil {
				errs[i] = err
				return
			}
			errs[i] = r.share.Publish(ctx)
		})
	}
	wg.Wait()
	wins, conflicts := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, adminapi.ErrConflict):
			conflicts++
		default:
			t.Fatalf("publish: %v", err)
		}
	}
	if wins != 1 || conflicts != 1 {
		t.Fatalf("concurrent publishes: %v; want one win and one conflict", errs)
	}
	testutil.Eventually(t, "both replicas on the winner's CA", func() bool {
		return a.ca.IssuerID() == b.ca.IssuerID() && len(a.ca.Roots()) == 1 && len(b.ca.Roots()) == 1 &&
			a.ca.RootIDs()[0] == b.ca.RootIDs()[0]
	})

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
