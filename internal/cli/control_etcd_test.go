//go:build !trellis_nokube

package cli_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// TestControlEtcdStore: trellis control --store etcd://... with client TLS
// keeps its state in a three-member etcd cluster: policies applied through
// the admin API are in etcd under /trellis, no bolt file is made, and
// after a restart of the control plane the policies are read back.
func TestControlEtcdStore(t *testing.T) {
	clearEnv(t)
	c := etcdtest.Start(t, 3)
	dir := filepath.Join(t.TempDir(), "cp")
	args := []string{
		"control", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--log-level", "error",
		"--store", "etcd://" + strings.Join(c.Endpoints(), ","),
		"--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile,
		"--ca-kek-file", kekFile(t),
	}
	token := filepath.Join(dir, controlplane.AdminTokenFile)

	api, stop := startControl(t, args)
	if r := run(t, "", "--api", api, "--token-file", token, "apply", "-f", "testdata/mesh-and-policies.yaml"); r.code != cli.ExitOK {
		t.Fatalf("apply: %v", r)
	}
	stop()

	resp, err := c.Client().Get(t.Context(), "/trellis/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	for _, want := range []string{
		"/trellis/meta/trust-domain",
		"/trellis/resources/meshes/default",
		"/trellis/resources/authorizationpolicies/shop/frontend-reads-catalog",
		"/trellis/resources/authorizationpolicies/ops/deny-debug",
	} {
		if !slices.Contains(keys, want) {
			t.Errorf("etcd has no %s; its keys: %q", want, keys)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, controlplane.StoreFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s in the data dir: %v; want none with --store etcd://", controlplane.StoreFile, err)
	}

	api, _ = startControl(t, args)
	r := run(t, "", "--api", api, "--token-file", token, "get", "authorizationpolicies", "-A")
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "frontend-reads-catalog") || !strings.Contains(r.stdout, "deny-debug") {
		t.Errorf("get authorizationpolicies -A after the restart: %v\nwant both policies", r)
	}
}

// TestControlStoreFlags: bad --store and --etcd-* values are refused
// before the data dir is made, with errors naming the flag; plaintext to a
// member off loopback is refused naming the TLS flags; an etcd that does
// not answer is exit 2 (unreachable), not a user error.
func TestControlStoreFlags(t *testing.T) {
	clearEnv(t)
	files := t.TempDir()
	pem := filepath.Join(files, "empty.pem")
	if err := os.WriteFile(pem, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := l.Addr().String()
	l.Close()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown backend", []string{"--store", "consul://127.0.0.1:8500"}, cli.ExitUser,
			`--store "consul://127.0.0.1:8500": want bolt or etcd://HOST:PORT[,HOST:PORT...]`},
		{"no port", []string{"--store", "etcd://127.0.0.1"}, cli.ExitUser,
			`--store etcd://127.0.0.1: endpoint "127.0.0.1": want HOST:PORT`},
		{"empty endpoint", []string{"--store", "etcd://127.0.0.1:2379,"}, cli.ExitUser,
			`endpoint "": want HOST:PORT`},
		{"plaintext off loopback", []string{"--store", "etcd://etcd-0.example:2379,127.0.0.1:2379"}, cli.ExitUser,
			"etcd-0.example:2379 is not on loopback and no TLS flags are given: give --etcd-ca-file, and --etcd-cert-file with --etcd-key-file"},
		{"cert without key", []string{"--store", "etcd://127.0.0.1:2379", "--etcd-cert-file", pem}, cli.ExitUser,
			"--etcd-cert-file and --etcd-key-file go together"},
		{"missing CA file", []string{"--store", "etcd://127.0.0.1:2379", "--etcd-ca-file", filepath.Join(files, "missing.pem")}, cli.ExitUser,
			"--etcd-ca-file: open "},
		{"CA file without a certificate", []string{"--store", "etcd://127.0.0.1:2379", "--etcd-ca-file", pem}, cli.ExitUser,
			"--etcd-ca-file " + pem + ": no PEM certificate in it"},
		{"prefix", []string{"--store", "etcd://127.0.0.1:2379", "--etcd-prefix", "trellis/"}, cli.ExitUser,
			`--etcd-prefix "trellis/": want a path such as /trellis`},
		{"nothing listening", []string{"--store", "etcd://" + silent}, cli.ExitInternal,
			"store: unavailable: the etcd quorum is unreachable through " + silent},
	} {
		dir := filepath.Join(t.TempDir(), "cp")
		r := run(t, "", append([]string{"control", "--data-dir", dir, "--api-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, tt.args...)...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: %v\nwant exit %d and %q", tt.name, r, tt.code, tt.want)
		}
		if _, err := os.Stat(dir); tt.code == cli.ExitUser && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the data dir was made (%v) though a flag was refused", tt.name, err)
		}
	}
}

// startControl runs trellis control with args and --api-addr on a free
// loopback port until the test ends or stop is called, and returns its
// admin API's URL once /readyz answers.
func startControl(t *testing.T, args []string) (api string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var out strings.Builder
	go func() {
		done <- cli.Main(ctx, append(args, "--api-addr", addr), strings.NewReader(""), &out, &out)
	}()
	exited := false
	testutil.Eventually(t, "trellis control ready", func() bool {
		select {
		case code := <-done:
			exited = true
			t.Fatalf("trellis control exited with %d before it was up: %s", code, out.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	stop = func() {
		t.Helper()
		if exited {
			return
		}
		exited = true
		cancel()
		if code := <-done; code != cli.ExitOK {
			t.Errorf("trellis control exited with %d, want %d: %s", code, cli.ExitOK, out.String())
		}
	}
	t.Cleanup(stop)
	return "http://" + addr, stop
}
