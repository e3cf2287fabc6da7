package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// TestEtcdQuorumLost: a control plane on a 3-member etcd cluster (TLS) with
// three proxies and callers. One member killed: no effect, writes go on.
// Two killed (quorum lost): the proxies keep their config and not one call
// fails; `trellis apply` fails with a clear 503 naming the store; status
// still answers. The members back: writes resume and reach the proxies.
func TestEtcdQuorumLost(t *testing.T) {
	skipIfShort(t)
	c := etcdtest.Start(t, 3)
	dir := t.TempDir()
	kek := writeKEK(t, dir)
	data := filepath.Join(dir, "control")
	cp := startControl(t, data, "", "--store", "etcd://"+strings.Join(c.Endpoints(), ","), "--ca-kek-file", kek,
		"--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile)
	cp.AwaitReady(t)
	env := cp.env()
	m := startTrafficMesh(t, cp, dir)
	loop := m.startTraffic(t, 5*time.Millisecond)
	policy := func(name, path string) string {
		return "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: shop}\n" +
			"spec: {selector: {service: catalog}, action: DENY, rules: [{to: [{paths: [" + path + "]}]}]}\n"
	}

	down := []int{c.Leader()}
	c.Kill(down[0])
	awaitCond(t, 15*time.Second, "a write with one member down", func() bool {
		return runBinary(t, env, policy("one-down", "/one-down"), "apply", "-f", "-").code == 0
	})

	// Quorum lost: two of three down.
	other := (down[0] + 1) % 3
	c.Kill(other)
	down = append(down, other)
	before := loop.calls.Load()
	r := runBinary(t, env, policy("no-quorum", "/no-quorum"), "apply", "-f", "-")
	if r.code == 0 || !strings.Contains(r.stderr, "503") && !strings.Contains(r.stderr, "store is unavailable") {
		t.Errorf("apply without a quorum: %v; want a clear 503 naming the store", r)
	}
	t.Logf("apply without a quorum: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if st := runBinary(t, env, "", "status"); st.code != 0 && st.code != 4 {
		t.Errorf("status without a quorum: %v", st)
	}
	time.Sleep(3 * time.Second)
	during := loop.calls.Load() - before

	// Back: writes resume and reach the proxies.
	for _, i := range down {
		c.StartMember(i)
	}
	c.WaitHealthy()
	awaitCond(t, 30*time.Second, "a write after the quorum is back", func() bool {
		return runBinary(t, env, policy("back", "/admin"), "apply", "-f", "-").code == 0
	})
	awaitCond(t, 15*time.Second, "the policy applied after the outage reaches the proxies", func() bool {
		resp, err := m.hc.Get("http://" + m.httpUp + "/admin")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 403
	})
	loop.Stop()
	t.Logf("%d calls (%d without a quorum), %d failed", loop.calls.Load(), during, loop.failures.Load())
	if during < 100 {
		t.Errorf("only %d calls without a quorum: the callers stalled", during)
	}
	if f := loop.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail while etcd has no quorum", f, loop.calls.Load(), loop.firstErr.Load())
	}
}

// TestEtcdReplicaFailover: two control-plane replicas on a 3-member etcd
// cluster, sharing the CA, tokens, resources and their proxy registries.
// Three proxies given both addresses (`--control A,B`) join A; callers
// call an HTTP and a TCP service through them. A, which also leads the
// singletons' election, is killed with SIGKILL:
// the proxies reconnect to B and are SYNCED there within 5 s, a policy
// applied through B during the failover reaches them, and not one call
// fails; B takes the election over.
func TestEtcdReplicaFailover(t *testing.T) {
	skipIfShort(t)
	c := etcdtest.Start(t, 3)
	dir := t.TempDir()
	kek := writeKEK(t, dir)
	replica := func(name string) *controlProcess {
		p := startControl(t, filepath.Join(dir, name), "", "--store", "etcd://"+strings.Join(c.Endpoints(), ","), "--ca-kek-file", kek,
			"--replica-id", name, "--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile)
		p.AwaitReady(t)
		return p
	}
	a := replica("cp-a")
	// The replica killed below is the leader of the singletons too.
	awaitCond(t, 15*time.Second, "cp-a leads the singletons", func() bool { return scrapeControl(t, a, "trellis_control_leader") == 1 })
	b := replica("cp-b")
	both := &controlProcess{GRPCAddr: a.GRPCAddr + "," + b.GRPCAddr, DataDir: a.DataDir, APIURL: a.APIURL}
	m := startTrafficMesh(t, both, dir)
	loop := m.startTraffic(t, 5*time.Millisecond)
	time.Sleep(time.Second)

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	killed := time.Now()
	before := loop.calls.Load()
	deny := "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: shop}\n" +
		"spec: {selector: {service: catalog}, action: DENY, rules: [{to: [{paths: [/admin]}]}]}\n"
	if r := runBinary(t, b.env(), deny, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply through B during the failover: %v", r)
	}
	awaitSynced(t, b.env(), 3)
	synced := time.Since(killed)
	awaitCond(t, 10*time.Second, "the policy applied during the failover reaches the proxies", func() bool {
		resp, err := m.hc.Get("http://" + m.httpUp + "/admin")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 403
	})
	awaitCond(t, 30*time.Second, "cp-b takes the singletons over", func() bool { return scrapeControl(t, b, "trellis_control_leader") == 1 })
	time.Sleep(3 * time.Second) // calls on B alone
	loop.Stop()
	t.Logf("%d calls (%d after the kill -9), %d failed; all three proxies SYNCED on B %.1fs after the kill", loop.calls.Load(), loop.calls.Load()-before, loop.failures.Load(), synced.Seconds())
	if synced > 5*time.Second {
		t.Errorf("the proxies were SYNCED on B %.1fs after the kill, want within 5s", synced.Seconds())
	}
	if loop.calls.Load()-before < 300 {
		t.Errorf("only %d calls after the kill: the callers stalled", loop.calls.Load()-before)
	}
	if f := loop.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail when a replica dies", f, loop.calls.Load(), loop.firstErr.Load())
	}
}

// writeKEK writes a fresh 32-byte key-encryption key into dir, mode 0600.
func writeKEK(t *testing.T, dir string) string {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	kek := filepath.Join(dir, "kek")
	if err := os.WriteFile(kek, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return kek
}
