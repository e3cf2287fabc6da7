package e2e

import (
	"encoding/json"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// TestControlPlaneKilledUnderTraffic is static stability: with the
// control plane killed (SIGKILL, no goodbye), proxies keep serving with
// their last config and certificates. An HTTP loop (a new client
// connection per request) and a TCP loop (a new mTLS connection between
// the proxies per connection) run throughout and must not see a single
// failure. The control plane then comes back on the same data dir and
// every proxy returns to SYNCED without a restart.
func TestControlPlaneKilledUnderTraffic(t *testing.T) {
	skipIfShort(t)
	dir := t.TempDir()
	cp := startControl(t, filepath.Join(dir, "control"), "")
	cp.AwaitReady(t)
	env := cp.env()
	m := startTrafficMesh(t, cp, dir)
	loop := m.startTraffic(t, 5*time.Millisecond)

	// The control plane saves its registry within 250ms of a change.
	time.Sleep(time.Second)
	t.Logf("SIGKILL to the control plane at %s", time.Now().Format("15:04:05.000"))
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	before := loop.calls.Load()
	time.Sleep(3 * time.Second)
	during := loop.calls.Load() - before
	if during < 50 {
		t.Errorf("only %d calls in 3s with the control plane dead: the loop stalled", during)
	}

	cp = cp.restart(t)
	cp.AwaitReady(t)
	t.Logf("control plane ready again at %s", time.Now().Format("15:04:05.000"))
	// Every proxy reconnects by itself (backoff with jitter) and is SYNCED.
	awaitSynced(t, env, 3)
	time.Sleep(500 * time.Millisecond)
	loop.Stop()
	t.Logf("%d calls (%d with the control plane dead), %d failed", loop.calls.Load(), during, loop.failures.Load())
	if f := loop.failures.Load(); f != 0 {
		t.Fatalf("%d of %d calls failed (first: %v); none may fail because the control plane died", f, loop.calls.Load(), loop.firstErr.Load())
	}
}

// awaitSynced waits until `trellis get workloads -A -o json` lists n
// connected proxies, all SYNCED.
func awaitSynced(t *testing.T, env []string, n int) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for {
		r := runBinary(t, env, "", "get", "workloads", "-A", "-o", "json")
		var list struct {
			Items []adminapi.ProxyInfo `json:"items"`
		}
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &list) == nil {
			synced := 0
			for _, p := range list.Items {
				if p.Connected && p.State == adminapi.ProxySynced {
					synced++
				}
			}
			if synced == n {
				return
			}
			last = r.stdout
		} else {
			last = r.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %d SYNCED proxies after 45s:\n%s", n, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
