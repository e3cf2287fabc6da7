package meshca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
)

func TestLoadOrCreateCAFirstStart(t *testing.T) {
	ca, _, dir := newClockCA(t)

	if got := len(ca.Roots()); got != 1 {
		t.Fatalf("len(Roots()) = %d, want 1", got)
	}
	if got := len(ca.Intermediates()); got != 1 {
		t.Fatalf("len(Intermediates()) = %d, want 1", got)
	}
	root, inter := ca.Roots()[0], ca.Intermediates()[0]

	t.Run("files", func(t *testing.T) {
		for _, f := range []struct {
			path string
			mode os.FileMode
		}{
			{"ca", 0o700},
			{"ca.crt", 0o644},
			{"ca/root.key", 0o600},
			{"ca/intermediate.key", 0o600},
			{"ca/intermediate.crt", 0o644},
		} {
			if got := fileMode(t, filepath.Join(dir, f.path)); got != f.mode {
				t.Errorf("mode of %s = %04o, want %04o", f.path, got, f.mode)
			}
		}

		for _, f := range []struct {
			path string
			want *x509.Certificate
		}{{"ca.crt", root}, {"ca/intermediate.crt", inter}} {
			certs, err := identity.ReadCertsFile(filepath.Join(dir, f.path))
			if err != nil {
				t.Fatalf("ReadCertsFile(%s): %v", f.path, err)
			}
			if len(certs) != 1 || !certs[0].Equal(f.want) {
				t.Errorf("%s holds %d certs (first %v), want exactly %q", f.path, len(certs), certs[0].Subject, f.want.Subject)
			}
		}

		for _, f := range []struct {
			path string
			cert *x509.Certificate
		}{{"ca/root.key", root}, {"ca/intermediate.key", inter}} {
			key, err := identity.ReadKeyFile(filepath.Join(dir, f.path))
			if err != nil {
				t.Fatalf("ReadKeyFile(%s): %v", f.path, err)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(f.cert.PublicKey) {
				t.Errorf("%s does not match the public key of %q", f.path, f.cert.Subject)
			}
		}
	})

	t.Run("root", func(t *testing.T) {
		pub, ok := root.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("root key = %T, want ECDSA P-256", root.PublicKey)
		}
		if err := root.CheckSignatureFrom(root); err != nil {
			t.Errorf("root is not self-signed: %v", err)
		}
		if !bytes.Equal(root.RawIssuer, root.RawSubject) {
			t.Errorf("root issuer %q != subject %q", root.Issuer, root.Subject)
		}
		if !root.IsCA || !root.BasicConstraintsValid {
			t.Errorf("root IsCA=%v BasicConstraintsValid=%v, want both true", root.IsCA, root.BasicConstraintsValid)
		}
		if root.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("root KeyUsage = %b, want CertSign", root.KeyUsage)
		}
		if got, want := root.NotBefore, t0.Add(-identity.MaxBackdate); !got.Equal(want) {
			t.Errorf("root NotBefore = %v, want %v", got, want)
		}
		if got, want := root.NotAfter, t0.Add(meshca.RootTTL); !got.Equal(want) {
			t.Errorf("root NotAfter = %v, want %v", got, want)
		}
		if got := root.NotAfter.Sub(t0); got < 3650*24*time.Hour || got > 3653*24*time.Hour {
			t.Errorf("root validity = %v, want about 10 years", got)
		}
		if len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("root URIs = %v, want [spiffe://example.org]", root.URIs)
		}
	})

	t.Run("intermediate", func(t *testing.T) {
		pub, ok := inter.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("intermediate key = %T, want ECDSA P-256", inter.PublicKey)
		}
		if err := inter.CheckSignatureFrom(root); err != nil {
			t.Errorf("intermediate not signed by root: %v", err)
		}
		if err := inter.CheckSignatureFrom(inter); err == nil {
			t.Errorf("intermediate is self-signed, want signed by root")
		}
		if !bytes.Equal(inter.RawIssuer, root.RawSubject) {
			t.Errorf("intermediate issuer = %q, want %q", inter.Issuer, root.Subject)
		}
		if !inter.IsCA || !inter.BasicConstraintsValid {
			t.Errorf("intermediate IsCA=%v BasicConstraintsValid=%v, want both true", inter.IsCA, inter.BasicConstraintsValid)
		}
		if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
			t.Errorf("intermediate MaxPathLen=%d MaxPathLenZero=%v, want 0 and true", inter.MaxPathLen, inter.MaxPathLenZero)
		}
		if got, want := inter.NotBefore, t0.Add(-identity.MaxBackdate); !got.Equal(want) {
			t.Errorf("intermediate NotBefore = %v, want %v", got, want)
		}
		if got, want := inter.NotAfter, t0.Add(meshca.IntermediateTTL); !got.Equal(want) {
			t.Errorf("intermediate NotAfter = %v, want %v", got, want)
		}
		if got := inter.NotAfter.Sub(t0); got < 365*24*time.Hour || got > 366*24*time.Hour {
			t.Errorf("intermediate validity = %v, want about 1 year", got)
		}
		if got, want := ca.IntermediateExpiry(), inter.NotAfter; !got.Equal(want) {
			t.Errorf("IntermediateExpiry() = %v, want %v", got, want)
		}
		if root.SerialNumber.Cmp(inter.SerialNumber) == 0 {
			t.Errorf("root and intermediate share serial %v", root.SerialNumber)
		}
	})

	if got := ca.TrustDomain(); got != td {
		t.Errorf("TrustDomain() = %v, want %v", got, td)
	}
}

func TestLoadOrCreateCASecondStart(t *testing.T) {
	first, clk, dir := newClockCA(t)
	files := map[string][]byte{}
	for _, f := range []string{"ca.crt", "ca/root.key", "ca/intermediate.key", "ca/intermediate.crt"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}

	// A restart two hours later, with its own clock.
	later := clock.NewFake(t0.Add(2 * time.Hour))
	second, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{Now: later.Now})
	if err != nil {
		t.Fatalf("second LoadOrCreateCA: %v", err)
	}
	if created {
		t.Errorf("second LoadOrCreateCA: created = true, want false")
	}
	if got, want := second.Roots(), first.Roots(); len(got) != 1 || !got[0].Equal(want[0]) {
		t.Errorf("reloaded roots differ from the created ones")
	}
	if got, want := second.Intermediates(), first.Intermediates(); len(got) != 1 || !got[0].Equal(want[0]) {
		t.Errorf("reloaded intermediates differ from the created ones")
	}
	for f, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s was rewritten by the second start", f)
		}
	}

	// The reloaded CA signs with the intermediate key it loaded and with the
	// clock it was given now, not the first one.
	clk.Advance(time.Hour)
	csr, _ := testutil.NewCSR(t, webID.String())
	leaf, err := second.SignCSR(csr, webID, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR with reloaded CA: %v", err)
	}
	if got, want := leaf.Cert.NotBefore, later.Now().Add(-identity.MaxBackdate); !got.Equal(want) {
		t.Errorf("leaf NotBefore = %v, want %v (from the reloaded CA's clock)", got, want)
	}
	verifyLeaf(t, leaf.Cert, leaf.Intermediates, readRoots(t, dir), later.Now())
	if err := leaf.Cert.CheckSignatureFrom(first.Intermediates()[0]); err != nil {
		t.Errorf("leaf from reloaded CA not signed by the original intermediate: %v", err)
	}
}

func TestLoadOrCreateCAClock(t *testing.T) {
	for _, start := range []time.Time{
		time.Date(2001, time.January, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2042, time.July, 9, 12, 30, 0, 0, time.UTC),
	} {
		clk := clock.NewFake(start)
		ca, _, err := meshca.LoadOrCreate(t.TempDir(), td, meshca.Options{Now: clk.Now})
		if err != nil {
			t.Fatalf("LoadOrCreateCA at %v: %v", start, err)
		}
		for _, c := range []*x509.Certificate{ca.Roots()[0], ca.Intermediates()[0]} {
			if got, want := c.NotBefore, start.Add(-identity.MaxBackdate); !got.Equal(want) {
				t.Errorf("%q NotBefore = %v, want %v", c.Subject.CommonName, got, want)
			}
		}
	}
}

func TestLoadOrCreateCAReal(t *testing.T) {
	ca, dir := testutil.NewCA(t, "example.org")
	before := time.Now()
	if got := ca.Roots()[0].NotBefore; got.After(before) || before.Sub(got) > identity.MaxBackdate+time.Minute {
		t.Errorf("root NotBefore = %v, want about %v (nil Now means time.Now)", got, before.Add(-identity.MaxBackdate))
	}
	_, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{})
	if err != nil || created {
		t.Errorf("reload: created=%v err=%v, want false, nil", created, err)
	}
}

func TestLoadOrCreateCAErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		now     time.Time // the reloading clock; zero means t0
		wantMsg string
	}{
		{
			name: "intermediate key readable by others",
			corrupt: func(t *testing.T, dir string) {
				chmod(t, filepath.Join(dir, "ca/intermediate.key"), 0o644)
			},
			wantMsg: "chmod 600",
		},
		{
			name: "root certificate missing",
			corrupt: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "ca.crt")); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "ca.crt",
		},
		{
			name: "intermediate key missing",
			corrupt: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "ca/intermediate.key")); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "intermediate.key",
		},
		{
			name: "intermediate certificate garbage",
			corrupt: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "ca/intermediate.crt"), []byte("garbage"), 0o644)
			},
			wantMsg: "no CERTIFICATE",
		},
		{
			name: "root replaced by a foreign root",
			corrupt: func(t *testing.T, dir string) {
				other, _ := testutil.NewCA(t, "example.org")
				writeFile(t, filepath.Join(dir, "ca.crt"), identity.EncodeCertsPEM(other.Roots()...), 0o644)
			},
			wantMsg: "verify intermediate",
		},
		{
			name:    "intermediate expired",
			corrupt: func(t *testing.T, dir string) {},
			now:     t0.Add(meshca.IntermediateTTL + time.Second),
			wantMsg: "expired",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, dir := newClockCA(t)
			tc.corrupt(t, dir)
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			ca, created, err := meshca.LoadOrCreate(dir, td, meshca.Options{Now: clock.NewFake(now).Now})
			if err == nil {
				t.Fatalf("LoadOrCreateCA = %v, created=%v, nil error; want error containing %q", ca, created, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
			if created {
				t.Errorf("created = true on a load error")
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, path, mode) // os.WriteFile honours the umask
}

// userPKI is a CA hierarchy the user brings: root -> intermediates[n-1] ->
// ... -> intermediates[0], which signs the mesh's leaves.
type userPKI struct {
	root    *x509.Certificate
	inters  []*x509.Certificate // issuer first
	key     crypto.Signer       // key of inters[0]
	rootKey crypto.Signer
}

func issueCA(t *testing.T, name string, parent *x509.Certificate, parentKey crypto.Signer, key crypto.Signer, notAfter time.Time, isCA bool) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"User Corp"}, CommonName: name},
		NotBefore:             t0.Add(-24 * time.Hour),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if !isCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newUserPKI builds a root and depth intermediates below it.
func newUserPKI(t *testing.T, depth int) userPKI {
	t.Helper()
	rootKey := mustECDSA(t, elliptic.P384())
	root := issueCA(t, "User Root", nil, rootKey, rootKey, t0.Add(20*365*24*time.Hour), true)
	p := userPKI{root: root, rootKey: rootKey}
	parent, parentKey := root, crypto.Signer(rootKey)
	for i := range depth {
		k := mustECDSA(t, elliptic.P256())
		c := issueCA(t, "User Intermediate "+string(rune('A'+i)), parent, parentKey, k, t0.Add(2*365*24*time.Hour), true)
		p.inters = append([]*x509.Certificate{c}, p.inters...)
		p.key, parent, parentKey = k, c, k
	}
	return p
}

// write saves certs to dir/chain.pem and key to dir/inter.key (mode
// keyMode) and returns the paths.
func writePKI(t *testing.T, certs []*x509.Certificate, key crypto.Signer, keyMode os.FileMode) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "chain.pem"), filepath.Join(dir, "inter.key")
	writeFile(t, certFile, identity.EncodeCertsPEM(certs...), 0o644)
	pemKey, err := identity.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, pemKey, keyMode)
	return certFile, keyFile
}

func TestLoadExternalCA(t *testing.T) {
	for _, depth := range []int{1, 2} {
		pki := newUserPKI(t, depth)
		certFile, keyFile := writePKI(t, append(slices.Clone(pki.inters), pki.root), pki.key, 0o600)
		clk := clock.NewFake(t0)
		ca, err := meshca.LoadExternal(certFile, keyFile, td, meshca.Options{Now: clk.Now})
		if err != nil {
			t.Fatalf("depth %d: LoadExternalCA: %v", depth, err)
		}
		if got := ca.Roots(); len(got) != 1 || !got[0].Equal(pki.root) {
			t.Errorf("depth %d: Roots() = %d certs, want exactly the user root", depth, len(got))
		}
		if got := ca.Intermediates(); !slices.EqualFunc(got, pki.inters, (*x509.Certificate).Equal) {
			t.Errorf("depth %d: Intermediates() = %d certs, want the %d user intermediates, issuer first", depth, len(got), len(pki.inters))
		}
		if got, want := ca.IntermediateExpiry(), pki.inters[0].NotAfter; !got.Equal(want) {
			t.Errorf("depth %d: IntermediateExpiry() = %v, want %v", depth, got, want)
		}

		clk.Advance(time.Hour)
		csr, _ := testutil.NewCSR(t, webID.String())
		leaf, err := ca.SignCSR(csr, webID, 24*time.Hour)
		if err != nil {
			t.Fatalf("depth %d: SignCSR: %v", depth, err)
		}
		if got, want := leaf.Cert.NotBefore, clk.Now().Add(-identity.MaxBackdate); !got.Equal(want) {
			t.Errorf("depth %d: leaf NotBefore = %v, want %v (injected clock)", depth, got, want)
		}
		verifyLeaf(t, leaf.Cert, leaf.Intermediates, certPool(pki.root), clk.Now())
		// The mesh's own roots must not verify it.
		other, _ := testutil.NewCA(t, "example.org")
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: certPool(other.Roots()...), Intermediates: certPool(leaf.Intermediates...), CurrentTime: clk.Now()}); err == nil {
			t.Errorf("depth %d: leaf verifies to an unrelated root", depth)
		}
	}
}

func TestLoadExternalCAErrors(t *testing.T) {
	pki := newUserPKI(t, 2) // root -> B -> A
	a, b := pki.inters[0], pki.inters[1]
	leafKey := mustECDSA(t, elliptic.P256())
	leafCert := issueCA(t, "not a CA", a, pki.key, leafKey, t0.Add(time.Hour*24), false)
	foreign := newUserPKI(t, 1)

	for _, tc := range []struct {
		name    string
		certs   []*x509.Certificate
		key     crypto.Signer
		keyMode os.FileMode
		setup   func(t *testing.T, certFile, keyFile string)
		now     time.Time
		wantMsg string
		wantErr error
	}{
		{name: "key does not match", certs: []*x509.Certificate{a, b, pki.root}, key: mustECDSA(t, elliptic.P256()), wantMsg: "does not match"},
		{name: "root key instead of intermediate key", certs: []*x509.Certificate{a, b, pki.root}, key: pki.rootKey, wantMsg: "does not match"},
		{name: "chain missing the root", certs: []*x509.Certificate{a, b}, key: pki.key, wantMsg: "ending with the self-signed root"},
		{name: "only the intermediate", certs: []*x509.Certificate{a}, key: pki.key, wantMsg: "ending with the self-signed root"},
		{name: "chain missing a middle intermediate", certs: []*x509.Certificate{a, pki.root}, key: pki.key, wantMsg: "verify intermediate"},
		{name: "chain ending in a foreign root", certs: []*x509.Certificate{a, b, foreign.root}, key: pki.key, wantMsg: "verify intermediate"},
		{name: "first cert not a CA", certs: []*x509.Certificate{leafCert, a, b, pki.root}, key: leafKey, wantMsg: "not a CA certificate"},
		{name: "root alone", certs: []*x509.Certificate{pki.root}, key: pki.rootKey, wantMsg: "ending with the self-signed root"},
		{name: "key file mode 0644", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key, keyMode: 0o644, wantMsg: "chmod 600"},
		{name: "key file mode 0640", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key, keyMode: 0o640, wantMsg: "chmod 600"},
		{
			name: "cert file missing", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key,
			setup: func(t *testing.T, certFile, _ string) {
				if err := os.Remove(certFile); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "read certificates", wantErr: os.ErrNotExist,
		},
		{
			name: "key file missing", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key,
			setup: func(t *testing.T, _, keyFile string) {
				if err := os.Remove(keyFile); err != nil {
					t.Fatal(err)
				}
			},
			wantMsg: "read key", wantErr: os.ErrNotExist,
		},
		{
			name: "cert file holds no certificate", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key,
			setup: func(t *testing.T, certFile, _ string) {
				writeFile(t, certFile, []byte("-----BEGIN NOTHING-----\n-----END NOTHING-----\n"), 0o644)
			},
			wantMsg: "no CERTIFICATE",
		},
		{name: "intermediate expired", certs: []*x509.Certificate{a, b, pki.root}, key: pki.key, now: a.NotAfter.Add(time.Second), wantMsg: "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.keyMode
			if mode == 0 {
				mode = 0o600
			}
			certFile, keyFile := writePKI(t, tc.certs, tc.key, mode)
			if tc.setup != nil {
				tc.setup(t, certFile, keyFile)
			}
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			ca, err := meshca.LoadExternal(certFile, keyFile, td, meshca.Options{Now: clock.NewFake(now).Now})
			if err == nil {
				t.Fatalf("LoadExternalCA = %v, nil error; want error containing %q", ca, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want errors.Is(err, %v)", err, tc.wantErr)
			}
		})
	}
}
