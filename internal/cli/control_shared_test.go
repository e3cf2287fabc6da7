//go:build !trellis_nokube

package cli_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// kekFile writes a fresh 32-byte key-encryption key, mode 0600.
func kekFile(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	p := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(p, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Two `trellis control` replicas on one etcd cluster (TLS, 3 members)
// share what replicas must: the CA (sealed in etcd with --ca-kek-file,
// never in the clear), the admin token (A's works on B), the resources
// (applied through A, read through B), the join tokens (made on A, listed
// on B), the admin tokens (made on A, used on B, revoked on B and refused
// by A) and a root rotation (made on A, taken by B). A replica given
// another key-encryption key refuses to start, saying why; the flags
// without a shared store are refused.
func TestReplicasShareCAOnEtcd(t *testing.T) {
	clearEnv(t)
	c := etcdtest.Start(t, 3)
	kek := kekFile(t)
	replica := func(name, kekPath string) []string {
		return []string{"control", "--data-dir", filepath.Join(t.TempDir(), name), "--grpc-addr", "127.0.0.1:0", "--log-level", "error",
			"--store", "etcd://" + strings.Join(c.Endpoints(), ","), "--replica-id", name, "--ca-kek-file", kekPath,
			"--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile}
	}
	argsA, argsB := replica("cp-a", kek), replica("cp-b", kek)
	apiA, _ := startControl(t, argsA)
	apiB, _ := startControl(t, argsB)
	dirA, dirB := argsA[2], argsB[2]
	tokA, _ := os.ReadFile(filepath.Join(dirA, controlplane.AdminTokenFile))
	tokB, _ := os.ReadFile(filepath.Join(dirB, controlplane.AdminTokenFile))
	caA, _ := os.ReadFile(filepath.Join(dirA, "ca.crt"))
	caB, _ := os.ReadFile(filepath.Join(dirB, "ca.crt"))
	if len(tokA) == 0 || !bytes.Equal(tokA, tokB) || len(caA) == 0 || !bytes.Equal(caA, caB) {
		t.Fatal("the replicas do not share the admin token and the CA")
	}
	token := filepath.Join(dirA, controlplane.AdminTokenFile)
	on := func(api string, args ...string) result {
		return run(t, "", append([]string{"--api", api, "--token-file", token}, args...)...)
	}
	if r := on(apiA, "apply", "-f", "testdata/mesh-and-policies.yaml"); r.code != cli.ExitOK {
		t.Fatalf("apply through A: %v", r)
	}
	if r := on(apiB, "get", "authz", "-A"); r.code != cli.ExitOK || len(strings.TrimSpace(r.stdout)) == 0 || strings.Count(r.stdout, "\n") < 2 {
		t.Errorf("policies through B with A's admin token: %v", r)
	}
	if r := on(apiA, "token", "create", "--service", "vm-billing", "--namespace", "shop"); r.code != cli.ExitOK {
		t.Fatalf("token create on A: %v", r)
	}
	if r := on(apiB, "token", "list"); r.code != cli.ExitOK || !strings.Contains(r.stdout, "vm-billing") {
		t.Errorf("B lists A's join token: %v", r)
	}

	// An admin token made on A works on B; revoked on B, A refuses it at once.
	r := on(apiA, "admin-token", "create", "--role", "viewer", "--name", "shared-viewer")
	if r.code != cli.ExitOK {
		t.Fatalf("admin-token create on A: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	viewer := filepath.Join(t.TempDir(), "viewer.token")
	if err := os.WriteFile(viewer, []byte(lines[len(lines)-1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	asViewer := func(api string, args ...string) result {
		return run(t, "", append([]string{"--api", api, "--token-file", viewer}, args...)...)
	}
	if r := asViewer(apiB, "get", "authz", "-A"); r.code != cli.ExitOK {
		t.Errorf("A's viewer token on B: %v", r)
	}
	if r := asViewer(apiB, "apply", "-f", "testdata/mesh-and-policies.yaml"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "lacks permission resources.write") {
		t.Errorf("A's viewer token applies on B: %v", r)
	}
	if r := on(apiB, "admin-token", "revoke", "shared-viewer"); r.code != cli.ExitOK {
		t.Fatalf("admin-token revoke on B: %v", r)
	}
	if r := asViewer(apiA, "get", "authz", "-A"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "revoked") {
		t.Errorf("the token revoked on B, used on A: %v", r)
	}

	// Nothing of the CA in the clear in etcd.
	resp, err := c.Client().Get(t.Context(), "/trellis/ca/files/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) < 4 {
		t.Fatalf("sealed CA files in etcd: %v, %v", resp, err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("BEGIN")) || bytes.Contains(kv.Value, bytes.TrimSpace(tokA)) {
			t.Errorf("%s is in etcd in the clear", kv.Key)
		}
	}

	// A root rotation made on A reaches B.
	if r := on(apiA, "ca", "rotate"); r.code != cli.ExitOK {
		t.Fatalf("ca rotate on A: %v", r)
	}
	testutil.Eventually(t, "B takes A's rotation", func() bool {
		r := on(apiB, "ca", "status", "-o", "json")
		var st adminapi.CAStatus
		return r.code == cli.ExitOK && json.Unmarshal([]byte(r.stdout), &st) == nil && len(st.Roots) == 2
	})

	// Another key cannot open the CA; the flags need a shared store.
	bad := run(t, "", append(replica("cp-c", kekFile(t)), "--api-addr", "127.0.0.1:0")...)
	if bad.code == cli.ExitOK || !strings.Contains(bad.stderr, "cannot be opened with --ca-kek-file") {
		t.Errorf("a replica with another key: %v", bad)
	}
	alone := run(t, "", "control", "--data-dir", filepath.Join(t.TempDir(), "x"), "--api-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--ca-kek-file", kek)
	if alone.code != cli.ExitUser || !strings.Contains(alone.stderr, "are for replicas sharing a store") {
		t.Errorf("--ca-kek-file without a shared store: %v", alone)
	}
}

// An apply larger than etcd takes in one transaction (its --max-txn-ops,
// 128 by default) is refused whole with a message saying what to do, and
// nothing of it is written.
func TestApplyTooLargeForEtcd(t *testing.T) {
	clearEnv(t)
	c := etcdtest.Start(t, 1)
	dir := filepath.Join(t.TempDir(), "cp")
	api, _ := startControl(t, []string{"control", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--log-level", "error",
		"--store", "etcd://" + strings.Join(c.Endpoints(), ","), "--ca-kek-file", kekFile(t),
		"--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile})
	var docs []string
	for i := range 200 {
		docs = append(docs, fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p%d, namespace: shop}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}\n", i))
	}
	token := filepath.Join(dir, controlplane.AdminTokenFile)
	r := run(t, strings.Join(docs, "---\n"), "--api", api, "--token-file", token, "apply", "-f", "-")
	if r.code == cli.ExitOK || !strings.Contains(r.stderr, "--max-txn-ops") || !strings.Contains(r.stderr, "nothing was applied") {
		t.Errorf("apply of 200 objects on etcd: %v", r)
	}
	if got := run(t, "", "--api", api, "--token-file", token, "get", "authz", "-n", "shop"); strings.Contains(got.stdout, "p0") {
		t.Errorf("part of the refused apply was written: %v", got)
	}
}
