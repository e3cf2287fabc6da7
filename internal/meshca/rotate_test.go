package meshca_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
)

// signLeaf signs a leaf for webID with ca.
func signLeaf(t *testing.T, ca *meshca.CA) *meshca.Leaf {
	t.Helper()
	csr, _ := testutil.NewCSR(t, webID.String())
	leaf, err := ca.SignCSR(csr, webID, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	return leaf
}

// verifies reports whether leaf and its chain verify to roots at now.
func verifies(leaf *meshca.Leaf, roots []*x509.Certificate, now time.Time) error {
	_, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: certPool(roots...), Intermediates: certPool(leaf.Intermediates...), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func reload(t *testing.T, dir string, clk *clock.Fake) *meshca.CA {
	t.Helper()
	ca, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{Now: clk.Now})
	if err != nil || created {
		t.Fatalf("reload: created %v, err %v", created, err)
	}
	return ca
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// caDirEntries lists DATA_DIR/ca, sorted.
func caDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// sameState fails unless a and b have the same roots and issuer.
func sameState(t *testing.T, what string, a, b *meshca.CA) {
	t.Helper()
	if a.IssuerID() != b.IssuerID() || !slices.Equal(a.RootIDs(), b.RootIDs()) {
		t.Errorf("%s: issuer %s roots %v, want issuer %s roots %v", what, short(a.IssuerID()), shorts(a.RootIDs()), short(b.IssuerID()), shorts(b.RootIDs()))
	}
}

func short(id string) string { return id[:8] }

func shorts(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = short(id)
	}
	return out
}

func TestRotateAndRetire(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	oldRoot, oldIssuer := ca.Roots()[0], ca.IssuerID()
	oldLeaf := signLeaf(t, ca)
	if got, want := ca.IssuerID(), identity.CertID(ca.Intermediates()[0]); got != want {
		t.Fatalf("IssuerID = %s, want CertID of the intermediate %s", got, want)
	}

	clk.Advance(time.Hour)
	if err := ca.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	roots := ca.Roots()
	if len(roots) != 2 || !roots[0].Equal(oldRoot) {
		t.Fatalf("after Rotate the bundle has %d roots (first %q), want the old root then the new one", len(roots), roots[0].Subject)
	}
	newRoot := roots[1]
	if !ca.ActiveRoot().Equal(newRoot) || ca.IssuerID() == oldIssuer {
		t.Errorf("after Rotate the active root is %q and the issuer unchanged=%v; want the new root and a new issuer", ca.ActiveRoot().Subject, ca.IssuerID() == oldIssuer)
	}
	if got, want := ca.RootIDs(), []string{identity.CertID(oldRoot), identity.CertID(newRoot)}; !slices.Equal(got, want) {
		t.Errorf("RootIDs = %v, want %v", shorts(got), shorts(want))
	}
	if got, want := newRoot.NotAfter, clk.Now().Add(meshca.RootTTL); !got.Equal(want) {
		t.Errorf("new root NotAfter = %v, want %v", got, want)
	}
	if got, want := ca.IntermediateExpiry(), clk.Now().Add(meshca.IntermediateTTL); !got.Equal(want) {
		t.Errorf("new intermediate expiry = %v, want %v", got, want)
	}
	if newRoot.Subject.CommonName == oldRoot.Subject.CommonName {
		t.Errorf("the new root has the old root's name %q; chains should tell them apart", newRoot.Subject.CommonName)
	}
	if got := ca.Intermediates()[0]; got.CheckSignatureFrom(newRoot) != nil {
		t.Errorf("the new intermediate is not signed by the new root")
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.crt")), identity.EncodeCertsPEM(oldRoot, newRoot)) {
		t.Errorf("ca.crt does not hold the old and the new root")
	}

	// Overlap: old and new leaves verify with the bundle; a new leaf also
	// verifies for a peer that has only the old root (cross-signed chain)
	// or only the new one.
	newLeaf := signLeaf(t, ca)
	if err := newLeaf.Cert.CheckSignatureFrom(ca.Intermediates()[0]); err != nil {
		t.Errorf("new leaf not signed by the new intermediate: %v", err)
	}
	for _, tc := range []struct {
		name  string
		leaf  *meshca.Leaf
		roots []*x509.Certificate
	}{
		{"old leaf, both roots", oldLeaf, roots},
		{"new leaf, both roots", newLeaf, roots},
		{"new leaf, old root only", newLeaf, []*x509.Certificate{oldRoot}},
		{"new leaf, new root only", newLeaf, []*x509.Certificate{newRoot}},
	} {
		if err := verifies(tc.leaf, tc.roots, clk.Now()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// Layout: one generation, pointed at; the first-start files (with the
	// old root's key) are gone; keys 0600.
	if got := strings.TrimSpace(string(readFile(t, filepath.Join(dir, "ca/current")))); got != "gen-2" {
		t.Errorf("ca/current = %q, want gen-2", got)
	}
	if got, want := caDirEntries(t, dir), []string{"current", "gen-2"}; !slices.Equal(got, want) {
		t.Errorf("ca/ holds %v, want %v", got, want)
	}
	for f, mode := range map[string]os.FileMode{"ca/gen-2/root.key": 0o600, "ca/gen-2/intermediate.key": 0o600, "ca/gen-2/roots.crt": 0o644,
		"ca/gen-2/intermediate.crt": 0o644, "ca/current": 0o600, "ca/gen-2": 0o700, "ca.crt": 0o644} {
		if got := fileMode(t, filepath.Join(dir, f)); got != mode {
			t.Errorf("mode of %s = %04o, want %04o", f, got, mode)
		}
	}
	sameState(t, "reload during the rotation", reload(t, dir, clk), ca)

	retired, err := ca.RetireOld()
	if err != nil {
		t.Fatalf("RetireOld: %v", err)
	}
	if len(retired) != 1 || !retired[0].Equal(oldRoot) {
		t.Errorf("RetireOld retired %d roots, want the old root", len(retired))
	}
	if got := ca.Roots(); len(got) != 1 || !got[0].Equal(newRoot) {
		t.Errorf("after RetireOld the bundle has %d roots, want only the new one", len(got))
	}
	if got := ca.Intermediates(); len(got) != 1 {
		t.Errorf("after RetireOld the chain has %d certificates, want only the intermediate (no cross-signed root)", len(got))
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.crt")), identity.EncodeCertsPEM(newRoot)) {
		t.Errorf("ca.crt does not hold exactly the new root")
	}
	if err := verifies(signLeaf(t, ca), []*x509.Certificate{newRoot}, clk.Now()); err != nil {
		t.Errorf("leaf after retirement, new root: %v", err)
	}
	if err := verifies(oldLeaf, ca.Roots(), clk.Now()); err == nil {
		t.Errorf("a leaf of the retired root still verifies with the bundle")
	}
	if got, want := caDirEntries(t, dir), []string{"current", "gen-3"}; !slices.Equal(got, want) {
		t.Errorf("ca/ holds %v, want %v", got, want)
	}
	sameState(t, "reload after retirement", reload(t, dir, clk), ca)

	if _, err := ca.RetireOld(); !errors.Is(err, meshca.ErrNotRotating) {
		t.Errorf("RetireOld with one root: %v, want ErrNotRotating", err)
	}
}

func TestRetireOldWithoutRotation(t *testing.T) {
	ca, _, dir := newClockCA(t)
	before := readFile(t, filepath.Join(dir, "ca.crt"))
	if _, err := ca.RetireOld(); !errors.Is(err, meshca.ErrNotRotating) {
		t.Errorf("RetireOld = %v, want ErrNotRotating", err)
	}
	if got := caDirEntries(t, dir); slices.Contains(got, "current") {
		t.Errorf("a refused RetireOld wrote ca/current")
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.crt")), before) {
		t.Errorf("a refused RetireOld changed ca.crt")
	}
}

// Two rotations before a retirement: the newest leaves still reach the
// oldest root through both cross-signed roots, and retiring keeps only the
// newest root.
func TestRotateTwice(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	first := ca.Roots()[0]
	for range 2 {
		if err := ca.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(ca.Roots()); got != 3 {
		t.Fatalf("bundle has %d roots, want 3", got)
	}
	leaf := signLeaf(t, ca)
	for i, r := range ca.Roots() {
		if err := verifies(leaf, []*x509.Certificate{r}, clk.Now()); err != nil {
			t.Errorf("newest leaf with only root %d: %v", i, err)
		}
	}
	if got, want := caDirEntries(t, dir), []string{"current", "gen-3"}; !slices.Equal(got, want) {
		t.Errorf("ca/ holds %v, want %v", got, want)
	}
	retired, err := ca.RetireOld()
	if err != nil {
		t.Fatal(err)
	}
	if len(retired) != 2 || !retired[0].Equal(first) {
		t.Errorf("retired %d roots, want the two older ones", len(retired))
	}
	sameState(t, "reload", reload(t, dir, clk), ca)
}

// A crash at any step of a rotation or retirement leaves the old or the
// new state on disk, complete and loadable, with ca.crt matching it, and
// the next rotation works.
func TestRotateCrashSafety(t *testing.T) {
	for _, tc := range []struct {
		op      string
		step    string
		wantNew bool
	}{
		{"rotate", "generation-written", false},
		{"rotate", "switched", true},
		{"retire", "generation-written", false},
		{"retire", "switched", true},
	} {
		t.Run(tc.op+" crash after "+tc.step, func(t *testing.T) {
			ca, clk, dir := newClockCA(t)
			if tc.op == "retire" {
				if err := ca.Rotate(); err != nil {
					t.Fatal(err)
				}
			}
			oldRoots, oldIssuer := ca.RootIDs(), ca.IssuerID()
			crash := errors.New("crash")
			meshca.SetCommitHook(ca, func(step string) error {
				if step == tc.step {
					return crash
				}
				return nil
			})
			var err error
			if tc.op == "rotate" {
				err = ca.Rotate()
			} else {
				_, err = ca.RetireOld()
			}
			if !errors.Is(err, crash) {
				t.Fatalf("%s with a crash: %v", tc.op, err)
			}

			again := reload(t, dir, clk)
			var wantRoots int
			switch {
			case !tc.wantNew:
				sameState(t, "after the crash", again, ca)
				wantRoots = len(oldRoots)
			case tc.op == "rotate":
				if again.IssuerID() == oldIssuer || len(again.RootIDs()) != 2 || again.RootIDs()[0] != oldRoots[0] {
					t.Errorf("after the crash: issuer changed %v, roots %v; want the rotated state", again.IssuerID() != oldIssuer, shorts(again.RootIDs()))
				}
				wantRoots = 2
			default:
				if again.IssuerID() != oldIssuer || !slices.Equal(again.RootIDs(), oldRoots[1:]) {
					t.Errorf("after the crash: roots %v, want %v", shorts(again.RootIDs()), shorts(oldRoots[1:]))
				}
				wantRoots = 1
			}
			if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.crt")), identity.EncodeCertsPEM(again.Roots()...)) {
				t.Errorf("ca.crt does not match the loaded trust bundle")
			}
			if got := len(readRootsFile(t, dir)); got != wantRoots {
				t.Errorf("ca.crt holds %d roots, want %d", got, wantRoots)
			}
			if err := verifies(signLeaf(t, again), again.Roots(), clk.Now()); err != nil {
				t.Errorf("leaf from the reloaded CA: %v", err)
			}
			// The next operation works and leaves exactly one generation.
			if err := again.Rotate(); err != nil {
				t.Fatalf("Rotate after the crash: %v", err)
			}
			if got := caDirEntries(t, dir); len(got) != 2 || got[0] != "current" {
				t.Errorf("ca/ holds %v, want current and one generation", got)
			}
			sameState(t, "reload after the next rotation", reload(t, dir, clk), again)
		})
	}
}

func readRootsFile(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	roots, err := identity.ReadCertsFile(filepath.Join(dir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// Leftovers of an interrupted rotation (a half-written generation that was
// never switched to, a temporary directory) are ignored at load, never
// reused, and removed by the next rotation.
func TestRotateIgnoresHalfWrittenGenerations(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	if err := ca.Rotate(); err != nil { // gen-2
		t.Fatal(err)
	}
	for _, d := range []string{"ca/gen-7", "ca/.gen-8.tmp123"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, d, "roots.crt"), []byte("half"), 0o644)
	}
	again := reload(t, dir, clk)
	sameState(t, "reload with leftovers", again, ca)
	if err := again.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got, want := caDirEntries(t, dir), []string{"current", "gen-9"}; !slices.Equal(got, want) {
		t.Errorf("ca/ holds %v, want %v", got, want)
	}
}

// A data dir from before rotations existed (flat files, no ca/current)
// loads, and its first rotation moves it to a generation directory.
func TestRotateUpgradesFirstStartLayout(t *testing.T) {
	ca, clk, dir := newClockCA(t)
	oldRoot := ca.Roots()[0]
	if got, want := caDirEntries(t, dir), []string{"intermediate.crt", "intermediate.key", "root.key"}; !slices.Equal(got, want) {
		t.Fatalf("first start wrote ca/ %v, want the flat layout %v", got, want)
	}
	// Files next to the CA's (the token signing key) are left alone.
	writeFile(t, filepath.Join(dir, "ca", "token-signing.key"), []byte("keep"), 0o600)
	again := reload(t, dir, clk)
	if err := again.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got, want := caDirEntries(t, dir), []string{"current", "gen-2", "token-signing.key"}; !slices.Equal(got, want) {
		t.Errorf("ca/ holds %v, want %v", got, want)
	}
	if got := again.Roots(); !got[0].Equal(oldRoot) {
		t.Errorf("the upgraded bundle lost the original root")
	}
	sameState(t, "reload", reload(t, dir, clk), again)
}

func TestLoadGenerationErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		wantMsg string
	}{
		{"pointer names garbage", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "ca/current"), []byte("../../etc\n"), 0o600)
		}, "not a generation directory"},
		{"pointer names a missing generation", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "ca/current"), []byte("gen-5\n"), 0o600)
		}, "gen-5"},
		{"pointer lost", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "ca/current")); err != nil {
				t.Fatal(err)
			}
		}, "ca/current is missing"},
		{"intermediate key readable by others", func(t *testing.T, dir string) {
			chmod(t, filepath.Join(dir, "ca/gen-2/intermediate.key"), 0o644)
		}, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, clk, dir := newClockCA(t)
			if err := ca.Rotate(); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(t, dir)
			_, _, err := meshca.LoadOrCreate(dir, td, meshca.Options{Now: clk.Now})
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("LoadOrCreateCA = %v, want an error containing %q", err, tc.wantMsg)
			}
		})
	}
}

func TestRotateRefusesExternalCA(t *testing.T) {
	pki := newUserPKI(t, 1)
	certFile, keyFile := writePKI(t, append(slices.Clone(pki.inters), pki.root), pki.key, 0o600)
	ca, err := meshca.LoadExternal(certFile, keyFile, td, meshca.Options{Now: clock.NewFake(t0).Now})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.External() {
		t.Errorf("External() = false for LoadExternalCA")
	}
	_, retireErr := ca.RetireOld()
	for op, err := range map[string]error{"Rotate": ca.Rotate(), "RetireOld": retireErr} {
		if !errors.Is(err, meshca.ErrExternalCA) || !strings.Contains(err.Error(), "rotate it in your PKI") {
			t.Errorf("%s on an external CA: %v, want ErrExternalCA telling to rotate in the user's PKI", op, err)
		}
	}
	if got := ca.Roots(); len(got) != 1 || !got[0].Equal(pki.root) {
		t.Errorf("a refused rotation changed the roots")
	}
}

// Signing while a rotation happens: every leaf verifies with the bundle
// of the moment after it (run with -race).
func TestSignDuringRotation(t *testing.T) {
	ca, clk, _ := newClockCA(t)
	var wg sync.WaitGroup
	leaves := make(chan *meshca.Leaf, 64)
	for range 4 {
		wg.Go(func() {
			for range 8 {
				csr, _ := testutil.NewCSR(t, webID.String())
				leaf, err := ca.SignCSR(csr, webID, time.Hour)
				if err != nil {
					t.Errorf("SignCSR during the rotation: %v", err)
					return
				}
				leaves <- leaf
			}
		})
	}
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(leaves)
	for l := range leaves {
		if err := verifies(l, ca.Roots(), clk.Now()); err != nil {
			t.Errorf("leaf signed during the rotation: %v", err)
		}
	}
}
