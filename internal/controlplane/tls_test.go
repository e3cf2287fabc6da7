package controlplane_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

func TestAdminAPIServesTLSWhenNotLoopback(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{APIAddr: "0.0.0.0:0"})
	if !strings.HasPrefix(cp.APIURL(), "https://") {
		t.Fatalf("APIURL %q, want https for a non-loopback --api-addr", cp.APIURL())
	}
	_, port, _ := net.SplitHostPort(cp.APIAddr())
	local := "127.0.0.1:" + port

	// Plain HTTP gets no API answer.
	resp, err := http.Get("http://" + local + "/healthz")
	if err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain http to a TLS admin API answered 200")
		}
		resp.Body.Close()
	}
	// HTTPS verified against ca.crt works, and still needs the token.
	c, err := adminapi.NewClient("https://"+local, cp.Token, filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), mustKind(t, "mesh"), "", "default"); err != nil {
		t.Errorf("https get mesh: %v", err)
	}
	c.Token = "wrong"
	if _, err := c.Get(context.Background(), mustKind(t, "mesh"), "", "default"); !adminapi.IsUserError(err) {
		t.Errorf("https with a wrong token: %v, want 401", err)
	}
}

// writeUserPKI makes a root and an intermediate as a user's own PKI would,
// writing the intermediate+root chain and the intermediate key (0600).
func writeUserPKI(t *testing.T, dir string) (certFile, keyFile string, root *x509.Certificate) {
	t.Helper()
	mk := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corp Root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	root = mk(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	inter := mk(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Corp Mesh Intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}, root, interKey.Public(), rootKey)
	certFile, keyFile = filepath.Join(dir, "inter.pem"), filepath.Join(dir, "inter.key")
	if err := os.WriteFile(certFile, identity.EncodeCertsPEM(inter, root), 0o644); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := identity.EncodeKeyPEM(interKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, root
}

func TestExternalIntermediate(t *testing.T) {
	certFile, keyFile, root := writeUserPKI(t, t.TempDir())
	cp := cptest.StartControlPlane(t, controlplane.Config{CACertFile: certFile, CAKeyFile: keyFile})
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 1 || !roots[0].Equal(root) {
		t.Fatalf("ca.crt does not hold the user's root")
	}
	if _, err := os.Stat(filepath.Join(cp.DataDir, "ca", "root.key")); !os.IsNotExist(err) {
		t.Errorf("a root key was generated although the user brought an intermediate (stat: %v)", err)
	}
	tok, err := cp.Client(t).CreateToken(context.Background(), adminapi.CreateTokenRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// certify verifies the leaf up to ca.crt, i.e. the user's root; the
	// gRPC dial also verifies the serving certificate against it.
	leaf := certify(t, cp, tok.Token, "spiffe://trellis.local/ns/default/sa/web")
	// Leaves never outlive the user's intermediate (24h), even though the
	// mesh's workloadTTL is 24h from a later start.
	if leaf.Leaf.NotAfter.After(time.Now().Add(24 * time.Hour)) {
		t.Errorf("leaf expires %v, after the intermediate", leaf.Leaf.NotAfter)
	}

	// A key that does not match is refused with a message naming the files.
	_, otherKey, _ := writeUserPKI(t, t.TempDir())
	dir := t.TempDir()
	st := cptest.OpenStore(t, dir)
	defer st.Close()
	_, err = controlplane.New(context.Background(), controlplane.Config{DataDir: dir, Store: st, CACertFile: certFile, CAKeyFile: otherKey, Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v, want 'does not match'", err)
	}
}
