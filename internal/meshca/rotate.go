package meshca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/identity"
)

// Root rotation keeps the CA's state in generation directories:
//
//	ca/current             names the generation in use ("gen-3"), switched by atomic rename
//	ca/gen-N/roots.crt     the trust bundle, oldest root first (copied to ca.crt)
//	ca/gen-N/root.key      the active root's key (0600)
//	ca/gen-N/intermediate.crt, intermediate.key
//	                       the signing intermediate (key 0600), followed by
//	                       cross-signed roots while a rotation is in progress
//
// A rotation writes a whole new generation under a temporary name, renames
// it into place, then switches ca/current: a crash before the switch leaves
// the old state (and an unused directory), after it the new one. ca.crt is
// rewritten after the switch and repaired at load if a crash came between.
// Only the current generation is kept. A data dir without ca/current holds
// the CA made at first start in the flat files (generation 1).
const (
	currentGenFile   = "ca/current"
	genPrefix        = "gen-"
	genRootsFile     = "roots.crt"
	genRootKeyFile   = "root.key"
	genInterCertFile = "intermediate.crt"
	genInterKeyFile  = "intermediate.key"
)

// Refusals of Rotate and RetireOld.
var (
	// ErrExternalCA: the CA is the user's (--ca-cert/--ca-key).
	ErrExternalCA = errors.New("the CA is external (--ca-cert/--ca-key): Trellis cannot rotate it; rotate it in your PKI, then restart the control plane with the new intermediate in --ca-cert/--ca-key")
	// ErrNotRotating: the trust bundle holds only the active root.
	ErrNotRotating = errors.New("no rotation in progress: the trust bundle holds only the active root; start one with `trellis ca rotate`")
)

// Rotate starts a root rotation: it creates a new root (RootTTL) and
// intermediate (IntermediateTTL) and makes them active, so leaves are signed
// by the new intermediate from now on, while the old root(s) stay in the
// trust bundle so that certificates issued before keep verifying. The new
// root is also cross-signed by the previous active root and that
// certificate travels in every new leaf's chain (Intermediates), so a peer
// that has not learned the new root yet still verifies new leaves.
//
// The new state is on disk (ca.crt included) before Rotate returns. A
// crash leaves either the old or the new state. If an error comes after the
// switch (writing ca.crt), the CA already uses the new state: compare
// IssuerID before and after to tell.
func (ca *CA) Rotate() error {
	if ca.External() {
		return fmt.Errorf("ca rotate: %w", ErrExternalCA)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cur := ca.current()
	prevKey, err := activeRootKey(cur)
	if err != nil {
		return fmt.Errorf("ca rotate: %w", err)
	}
	n, err := ca.nextGeneration(cur)
	if err != nil {
		return fmt.Errorf("ca rotate: %w", err)
	}
	t := ca.now()
	rootKey, root, interKey, inter, err := newRootAndIntermediate(ca.td, t, fmt.Sprintf(" generation %d", n))
	if err != nil {
		return fmt.Errorf("ca rotate: %w", err)
	}
	cross, err := crossSign(root, rootKey, cur.active, prevKey, t)
	if err != nil {
		return fmt.Errorf("ca rotate: cross-sign the new root: %w", err)
	}
	// Older cross-signed roots stay in the chain: after two rotations
	// without a retirement, a peer with only the oldest root still has a
	// path.
	chain := append([]*x509.Certificate{inter, cross}, cur.intermediates[1:]...)
	next, err := newCAState(chain, interKey, append(slices.Clone(cur.roots), root), t)
	if err != nil {
		return fmt.Errorf("ca rotate: %w", err)
	}
	if err := ca.commit(n, next, rootKey); err != nil {
		return fmt.Errorf("ca rotate: %w", err)
	}
	return nil
}

// RetireOld ends a rotation: it drops every root but the active one from
// the trust bundle (and the cross-signed roots from the chain) and returns
// the dropped roots. Certificates chained only to them stop verifying, so
// call it once every workload has a leaf from the active intermediate and
// trusts the active root. Persistence is as for Rotate.
func (ca *CA) RetireOld() ([]*x509.Certificate, error) {
	if ca.External() {
		return nil, fmt.Errorf("ca retire-old: %w", ErrExternalCA)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cur := ca.current()
	if len(cur.roots) < 2 {
		return nil, fmt.Errorf("ca retire-old: %w", ErrNotRotating)
	}
	rootKey, err := activeRootKey(cur)
	if err != nil {
		return nil, fmt.Errorf("ca retire-old: %w", err)
	}
	n, err := ca.nextGeneration(cur)
	if err != nil {
		return nil, fmt.Errorf("ca retire-old: %w", err)
	}
	next, err := newCAState([]*x509.Certificate{cur.issuer}, cur.key, []*x509.Certificate{cur.active}, ca.now())
	if err != nil {
		return nil, fmt.Errorf("ca retire-old: %w", err)
	}
	if err := ca.commit(n, next, rootKey); err != nil {
		return nil, fmt.Errorf("ca retire-old: %w", err)
	}
	var retired []*x509.Certificate
	for _, r := range cur.roots {
		if !r.Equal(cur.active) {
			retired = append(retired, r)
		}
	}
	return retired, nil
}

// crossSign certifies root's subject and key (its SubjectKeyId too, so
// chains built by key id find it) with the key of by.
func crossSign(root *x509.Certificate, rootKey crypto.Signer, by *x509.Certificate, byKey crypto.Signer, t time.Time) (*x509.Certificate, error) {
	notAfter := root.NotAfter
	if by.NotAfter.Before(notAfter) {
		notAfter = by.NotAfter
	}
	return createCACert(&x509.Certificate{
		RawSubject:   root.RawSubject,
		SubjectKeyId: root.SubjectKeyId,
		NotBefore:    t.Add(-identity.MaxBackdate),
		NotAfter:     notAfter,
		URIs:         root.URIs,
	}, by, rootKey, byKey, -1)
}

// activeRootKey reads the active root's key, which signs the next root's
// cross certificate and is carried into the next generation.
func activeRootKey(st *caState) (crypto.Signer, error) {
	if st.rootKeyFile == "" {
		return nil, errors.New("the active root's key is not kept here")
	}
	key, err := identity.ReadKeyFile(st.rootKeyFile)
	if err != nil {
		return nil, fmt.Errorf("the active root's key: %w", err)
	}
	if !publicKeyEqual(key.Public(), st.active.PublicKey) {
		return nil, fmt.Errorf("key %s does not match the active root %q", st.rootKeyFile, st.active.Subject)
	}
	return key, nil
}

// commit writes next as generation n and switches to it (see the top of
// this file), then uses it.
func (ca *CA) commit(n int, next *caState, rootKey crypto.Signer) error {
	caPath := filepath.Join(ca.dataDir, caDir)
	name := genPrefix + strconv.Itoa(n)
	tmp, err := os.MkdirTemp(caPath, "."+name+".tmp")
	if err != nil {
		return fmt.Errorf("write generation: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left after the rename
	rootKeyPEM, err := identity.EncodeKeyPEM(rootKey)
	if err != nil {
		return err
	}
	interKeyPEM, err := identity.EncodeKeyPEM(next.key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{genRootsFile, identity.EncodeCertsPEM(next.roots...), 0o644},
		{genRootKeyFile, rootKeyPEM, 0o600},
		{genInterCertFile, identity.EncodeCertsPEM(next.intermediates...), 0o644},
		{genInterKeyFile, interKeyPEM, 0o600},
	} {
		if err := atomicfile.WriteFile(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write generation: %w", err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(caPath, name)); err != nil {
		if _, serr := os.Stat(filepath.Join(caPath, name)); serr == nil {
			// Another replica's change, arriving through the shared
			// store, wrote this generation meanwhile: this one is lost.
			return fmt.Errorf("%w: generation %s appeared in %s while this change was made (another control-plane replica's change arrived); nothing changed here: see trellis ca status, then retry", adminapi.ErrConflict, name, caPath)
		}
		return fmt.Errorf("write generation: %w", err)
	}
	if err := atomicfile.SyncDir(caPath); err != nil {
		return fmt.Errorf("write generation: %w", err)
	}
	if err := ca.step("generation-written"); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(ca.dataDir, currentGenFile), []byte(name+"\n"), 0o600); err != nil {
		return fmt.Errorf("switch to generation %s: %w", name, err)
	}
	if err := ca.step("switched"); err != nil {
		return err
	}
	next.gen = name
	next.rootKeyFile = filepath.Join(caPath, name, genRootKeyFile)
	ca.state.Store(next)
	if err := writeBundleIfChanged(ca.dataDir, next.roots); err != nil {
		return fmt.Errorf("switched to generation %s, but %w; it is rewritten at the next start", name, err)
	}
	ca.prune(name)
	return nil
}

func (ca *CA) step(name string) error {
	if ca.hook != nil {
		return ca.hook(name)
	}
	return nil
}

// prune removes what the current generation keep replaced: older and
// unfinished generations, and the first-start files (the old root's key
// among them). Failures only leave unused files behind.
func (ca *CA) prune(keep string) {
	caPath := filepath.Join(ca.dataDir, caDir)
	entries, err := os.ReadDir(caPath)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if n != keep && (strings.HasPrefix(n, genPrefix) || strings.HasPrefix(n, "."+genPrefix)) {
			_ = os.RemoveAll(filepath.Join(caPath, n))
		}
	}
	for _, f := range []string{intermediateCertFile, intermediateKeyFile, rootKeyFile} {
		_ = os.Remove(filepath.Join(ca.dataDir, f))
	}
}

// nextGeneration is one more than any generation number in use or left
// behind by an interrupted rotation, so a new one never lands on old files.
func (ca *CA) nextGeneration(cur *caState) (int, error) {
	entries, err := os.ReadDir(filepath.Join(ca.dataDir, caDir))
	if err != nil {
		return 0, err
	}
	n := 1 // the first-start files
	for _, e := range entries {
		name := strings.TrimPrefix(e.Name(), ".")
		name, _, _ = strings.Cut(name, ".")
		if g, ok := genNumber(name); ok {
			n = max(n, g)
		}
	}
	if g, ok := genNumber(cur.gen); ok {
		n = max(n, g)
	}
	return n + 1, nil
}

func genNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, genPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0 && strconv.Itoa(n) == s
}

// readCurrentGeneration returns the generation ca/current names, or "" when
// there is none (a first-start data dir, or an empty one).
func readCurrentGeneration(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, currentGenFile))
	if errors.Is(err, os.ErrNotExist) {
		// Generations without a pointer: ca/current was lost. Creating a
		// new CA here would silently replace the mesh's roots.
		entries, _ := os.ReadDir(filepath.Join(dataDir, caDir))
		for _, e := range entries {
			if _, ok := genNumber(e.Name()); ok && e.IsDir() {
				if _, err := os.Stat(filepath.Join(dataDir, intermediateCertFile)); errors.Is(err, os.ErrNotExist) {
					return "", fmt.Errorf("load ca: %s is missing but %s exists; write the name of the newest complete generation directory (e.g. %q) into %s",
						filepath.Join(dataDir, currentGenFile), filepath.Join(dataDir, caDir, e.Name()), e.Name(), filepath.Join(dataDir, currentGenFile))
				}
			}
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("load ca: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if _, ok := genNumber(name); !ok {
		return "", fmt.Errorf("load ca: %s names %q, not a generation directory (gen-N)", filepath.Join(dataDir, currentGenFile), name)
	}
	return name, nil
}

// loadGeneration loads the CA state of generation gen.
func loadGeneration(dataDir, gen string, now time.Time) (*caState, error) {
	dir := filepath.Join(dataDir, caDir, gen)
	roots, err := identity.ReadCertsFile(filepath.Join(dir, genRootsFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	chain, err := identity.ReadCertsFile(filepath.Join(dir, genInterCertFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := identity.ReadKeyFile(filepath.Join(dir, genInterKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	st, err := newCAState(chain, key, roots, now)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w; if the intermediate expired, rotate (or start from a new --data-dir)", dir, err)
	}
	st.gen = gen
	st.rootKeyFile = filepath.Join(dir, genRootKeyFile)
	return st, nil
}

// writeBundleIfChanged makes dataDir/ca.crt hold exactly roots.
func writeBundleIfChanged(dataDir string, roots []*x509.Certificate) error {
	path := filepath.Join(dataDir, identity.RootCertFile)
	want := identity.EncodeCertsPEM(roots...)
	if got, err := os.ReadFile(path); err == nil && bytes.Equal(got, want) {
		return nil
	}
	return atomicfile.WriteFile(path, want, 0o644)
}
