package controlplane_test

import (
	"context"
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

func TestExternalIntermediate(t *testing.T) {
	certFile, keyFile, root := testutil.UserPKI(t, t.TempDir())
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
	_, otherKey, _ := testutil.UserPKI(t, t.TempDir())
	dir := t.TempDir()
	st := cptest.OpenStore(t, dir)
	defer st.Close()
	_, err = controlplane.New(context.Background(), controlplane.Config{DataDir: dir, Store: st, CACertFile: certFile, CAKeyFile: otherKey, Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v, want 'does not match'", err)
	}
}
