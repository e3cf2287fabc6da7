package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// TestPausedProxyIsStaleThenSynced: a proxy stopped with SIGSTOP during a
// policy change cannot acknowledge it and shows STALE in `trellis
// status`; after SIGCONT it applies the change and shows SYNCED, without
// a restart.
func TestPausedProxyIsStaleThenSynced(t *testing.T) {
	skipIfShort(t)
	dir := t.TempDir()
	cp := startControl(t, filepath.Join(dir, "control"), "", "--ack-timeout", "1s")
	cp.AwaitReady(t)
	env := cp.env()
	tok := mustRun(t, runBinary, env, "", "token", "create", "--service", "catalog", "--namespace", "shop")
	tokFile := filepath.Join(dir, "catalog.token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxyProcess(t, cp, "catalog", tokFile, "--app-addr", "127.0.0.1:9", "--inbound-addr", freeAddr(t, "127.0.0.1"), "--http-proxy-addr", "off")
	awaitState(t, env, adminapi.ProxySynced)

	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	mustRun(t, runBinary, env, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: catalog-reads, namespace: shop}\nspec: {selector: {service: catalog}, action: ALLOW, rules: [{to: [{methods: [GET]}]}]}\n", "apply", "-f", "-")
	stale := awaitState(t, env, adminapi.ProxyStale)
	if stale.Desired == nil || stale.Acked == nil || stale.Desired.Version == stale.Acked.Version {
		t.Errorf("STALE proxy: desired %v, acked %v; want a newer desired version than acknowledged", stale.Desired, stale.Acked)
	}

	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	synced := awaitState(t, env, adminapi.ProxySynced)
	if synced.Acked == nil || synced.Acked.Version != stale.Desired.Version {
		t.Errorf("after SIGCONT: acked %v, want version %s", synced.Acked, stale.Desired.Version)
	}
}

// awaitState polls `trellis status -o json` until the only proxy is in
// state, and returns it.
func awaitState(t *testing.T, env []string, state string) adminapi.ProxyInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		r := runBinary(t, env, "", "status", "-o", "json")
		var list adminapi.ProxyListResponse
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &list) == nil && len(list.Items) == 1 && list.Items[0].State == state {
			return list.Items[0]
		}
		last = r.String()
		if time.Now().After(deadline) {
			t.Fatalf("proxy not %s after 30s:\n%s", state, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
