package e2e

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// TestControlPlaneLongOutage: the control plane is killed (SIGKILL) for 25 s
// and, in parallel, another one for 90 s, longer than the endpoint grace
// period, while callers keep calling an HTTP and a TCP service through a
// client proxy. None of those calls may fail: not while the control plane
// is away, and not after it comes back, when the first proxies to
// reconnect must still be sent the services of those that have not yet.
// Every proxy must be SYNCED within 10 s of the restart, and until then
// `trellis status` lists every proxy (restored ones as RESTORED), never an
// empty mesh.
func TestControlPlaneLongOutage(t *testing.T) {
	skipIfShort(t)
	for _, outage := range []time.Duration{25 * time.Second, 90 * time.Second} {
		t.Run(outage.String(), func(t *testing.T) {
			t.Parallel()
			testOutage(t, outage)
		})
	}
}

func testOutage(t *testing.T, outage time.Duration) {
	const proxies = 3
	dir := t.TempDir()
	// The control plane's ports are rebound after the outage: take them
	// below the ephemeral range, where no outgoing connection (thousands
	// are made meanwhile) can take them first.
	grpcAddr, apiAddr := lowPortAddr(t), lowPortAddr(t)
	dataDir := filepath.Join(dir, "control")
	cp := runControlProcess(t, dataDir, grpcAddr, "http://"+apiAddr, []string{"control", "--data-dir", dataDir,
		"--grpc-addr", grpcAddr, "--api-addr", apiAddr, "--log-format", "json"})
	cp.AwaitReady(t)
	env := cp.env()
	m := startTrafficMesh(t, cp, dir)
	loop := m.startTraffic(t, 10*time.Millisecond)

	// The control plane saves its registry within 250ms of a change.
	time.Sleep(time.Second)
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	before := loop.calls.Load()
	time.Sleep(outage)
	during := loop.calls.Load() - before

	restart := time.Now()
	cp = cp.restart(t)
	cp.AwaitReady(t)
	ready := time.Since(restart)

	// Until every proxy is SYNCED, status lists all of them: restored
	// workloads awaiting their proxies' reconnect are RESTORED.
	var synced time.Duration
	seen := map[string]int{}
	for synced == 0 {
		if time.Since(restart) > 10*time.Second {
			t.Fatalf("not every proxy SYNCED 10s after the control plane restarted (states seen: %v)", seen)
		}
		r := runBinary(t, env, "", "status", "-o", "json")
		var list adminapi.ProxyListResponse
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &list) != nil {
			t.Fatalf("trellis status -o json: %v", r)
		}
		if len(list.Items) != proxies {
			t.Fatalf("trellis status lists %d proxies %.1fs after the restart, want all %d (restored ones awaiting reconnect): %+v",
				len(list.Items), time.Since(restart).Seconds(), proxies, list.Items)
		}
		n := 0
		for _, p := range list.Items {
			seen[p.State]++
			if p.Connected && p.State == adminapi.ProxySynced {
				n++
			}
		}
		if n == proxies {
			synced = time.Since(restart)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Traffic after every proxy is back on the new control plane.
	time.Sleep(time.Second)
	loop.Stop()
	t.Logf("outage %s: %d calls (%d with the control plane dead), %d failed; control plane ready %.1fs and every proxy SYNCED %.1fs after the restart; states seen meanwhile: %v",
		outage, loop.calls.Load(), during, loop.failures.Load(), ready.Seconds(), synced.Seconds(), seen)
	if during < 100 {
		t.Errorf("only %d calls during the %s outage: the callers stalled", during, outage)
	}
	if f := loop.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail because the control plane was away", f, loop.calls.Load(), loop.firstErr.Load())
	}
}

// lowPortAddr returns a loopback address with a port that was free a moment
// ago, below Linux's ephemeral range (32768-60999 by default), and not
// handed out before by this process.
func lowPortAddr(t *testing.T) string {
	t.Helper()
	lowPorts.Lock()
	defer lowPorts.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if lowPorts.used[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		lowPorts.used[port] = true
		return l.Addr().String()
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

var lowPorts = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}
