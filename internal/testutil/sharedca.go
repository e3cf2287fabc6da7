package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/meshca"
)

// NewSharedFiles returns a create func for a CA shared by replicas
// (casecret.Ensure, sharedca.Ensure): a new CA of td and an admin token.
func NewSharedFiles(td spiffeid.TrustDomain) func(dir string) error {
	return func(dir string) error {
		if _, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{}); err != nil {
			return err
		}
		tok := make([]byte, 16)
		_, _ = rand.Read(tok)
		return os.WriteFile(filepath.Join(dir, "admin.token"), []byte(hex.EncodeToString(tok)+"\n"), 0o600)
	}
}

// SharedReplica is one replica's CA and how it publishes a change to the
// share; the share reloads CA when another replica's change arrives.
type SharedReplica struct {
	CA      *meshca.CA
	Publish func(context.Context) error
}

// RotateThenRace checks a CA share with two replicas: a rotation a
// publishes reaches b; then both retire the old root at once from that
// version, and exactly one publish stands, the other failing with
// adminapi.ErrConflict, and both end on the winner's CA.
func RotateThenRace(t *testing.T, ctx context.Context, a, b SharedReplica) {
	t.Helper()
	if err := a.CA.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	Eventually(t, "b takes a's rotation", func() bool { return b.CA.IssuerID() == a.CA.IssuerID() && len(b.CA.Roots()) == 2 })

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []SharedReplica{a, b} {
		wg.Go(func() {
			if _, err := r.CA.RetireOld(); err != nil {
				errs[i] = err
				return
			}
			errs[i] = r.Publish(ctx)
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
	Eventually(t, "both replicas on the winner's CA", func() bool {
		return a.CA.IssuerID() == b.CA.IssuerID() && len(a.CA.Roots()) == 1 && len(b.CA.Roots()) == 1 && a.CA.RootIDs()[0] == b.CA.RootIDs()[0]
	})
}
