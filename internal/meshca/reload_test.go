package meshca_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/meshca"
)

// copyCA copies the CA files of dir a over dir b, leaving b's other files,
// as a replica materializing the shared CA's Secret does.
func copyCA(t *testing.T, a, b string) {
	t.Helper()
	err := filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(b, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Two CAs on copies of one data dir, as two control-plane replicas: a
// rotation and then a retirement made by one reach the other through its
// files and Reload, which reports a change only when there is one.
func TestReloadFollowsAnotherReplica(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	dirA, dirB := t.TempDir(), t.TempDir()
	a, _, err := meshca.LoadOrCreate(dirA, td, meshca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	copyCA(t, dirA, dirB)
	b, _, err := meshca.LoadOrCreate(dirB, td, meshca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := b.Reload(); err != nil || changed {
		t.Fatalf("reload with nothing new: %v, %v", changed, err)
	}
	same := func(step string) {
		t.Helper()
		if b.IssuerID() != a.IssuerID() || !slices.Equal(b.RootIDs(), a.RootIDs()) {
			t.Errorf("%s: b signs with %s trusting %v; a with %s trusting %v", step, b.IssuerID(), b.RootIDs(), a.IssuerID(), a.RootIDs())
		}
		ca, _ := os.ReadFile(filepath.Join(dirB, "ca.crt"))
		want, _ := os.ReadFile(filepath.Join(dirA, "ca.crt"))
		if string(ca) != string(want) {
			t.Errorf("%s: b's ca.crt differs from a's", step)
		}
	}
	if err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	copyCA(t, dirA, dirB)
	if changed, err := b.Reload(); err != nil || !changed {
		t.Fatalf("reload after a's rotation: %v, %v", changed, err)
	}
	same("after the rotation")
	if len(b.Roots()) != 2 {
		t.Errorf("b trusts %d roots during the rotation, want 2", len(b.Roots()))
	}
	if _, err := a.RetireOld(); err != nil {
		t.Fatal(err)
	}
	copyCA(t, dirA, dirB)
	if changed, err := b.Reload(); err != nil || !changed {
		t.Fatalf("reload after a's retirement: %v, %v", changed, err)
	}
	same("after the retirement")
	// b rotates next, from the state it reloaded.
	if err := b.Rotate(); err != nil {
		t.Fatal(err)
	}
	copyCA(t, dirB, dirA)
	if changed, err := a.Reload(); err != nil || !changed || a.IssuerID() != b.IssuerID() {
		t.Fatalf("a reloading b's rotation: %v, %v", changed, err)
	}
}
