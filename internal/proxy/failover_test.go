package proxy_test

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// TestControlPlaneFailover: two control planes share one CA and state
// (B's data dir is a copy of A's), and two proxies are given both, A
// first. They join A; A stops while a client calls a server through them;
// no call fails, both proxies' config streams are SYNCED on B within a few
// seconds, their certificates (6 s long) are renewed by B, and a policy
// applied on B reaches them.
//
// B's copy is taken after the proxies joined A, so B starts knowing them
// (restored, as after a restart): a control plane in hosts mode knows the
// endpoints of the proxies connected to it only, so with a B that never
// saw them, the first proxy to reach B is sent a mesh without the others
// until they reconnect too (a few 503s, unknown service).
func TestControlPlaneFailover(t *testing.T) {
	const ttl = 6 * time.Second
	dir := t.TempDir()
	dirA, dirB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	// Fixed ports: A is restarted on its own, and the proxies are given B's
	// before it runs.
	addrA, addrB := lowPortAddr(t), lowPortAddr(t)
	startCP := func(dataDir, addr string, log *slog.Logger) *meshtest.ControlPlane {
		return meshtest.StartControlPlane(t, controlplane.Config{DataDir: dataDir, GRPCAddr: addr, WorkloadTTL: ttl, Logger: log})
	}
	a := startCP(dirA, addrA, nil)
	meshtest.MustApply(t, a, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	control := []string{addrA, addrB}
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	server := meshtest.StartProxy(t, a, proxy.Config{Service: "catalog", AppAddr: app, ControlAddrs: control})
	client := meshtest.StartProxy(t, a, proxy.Config{Service: "frontend", ControlAddrs: control,
		Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	awaitSynced(t, a, "both proxies SYNCED on A", 10*time.Second)
	// The registry is saved within 250 ms of a change.
	time.Sleep(time.Second)
	a.Stop(t)
	copyDir(t, dirA, dirB)
	a = startCP(dirA, addrA, nil)
	logB := testutil.NewLogBuffer(t)
	b := startCP(dirB, addrB, logB.Logger)
	awaitSynced(t, a, "both proxies back on A, the first address", 10*time.Second)
	if n := connected(t, b); n != 0 {
		t.Fatalf("%d proxies connected to B while A is up; they must keep to the first address", n)
	}

	url := "http://" + client.UpstreamAddr(0) + "/"
	testutil.Eventually(t, "catalog reachable through frontend", func() bool { return get(url) == http.StatusOK })
	loop := startCalls(t, url)
	for loop.calls.Load() < 100 {
		time.Sleep(10 * time.Millisecond)
	}
	proxies := map[string]*proxy.Proxy{"catalog": server, "frontend": client}
	failures := map[string]float64{} // certificate requests (A was away a moment)
	for name, p := range proxies {
		failures[name] = metricValue(t, p, "trellis_certificate_request_failures_total")
	}

	stopped, before := time.Now(), loop.calls.Load()
	a.Stop(t)
	awaitSynced(t, b, "both proxies SYNCED on B after A stopped", 10*time.Second)
	reconnect := time.Since(stopped)
	// Certificates issued before A stopped are renewed within ttl: by B.
	for name := range proxies {
		testutil.EventuallyWithin(t, ttl, name+"'s certificate renewed by B", func() bool {
			return logB.CountLines(`msg="certificate issued"`, "/sa/"+name+" ", "via=renewal") > 0
		})
	}
	// Once on B, the proxies leave A's address alone: a listener there
	// (a host up, its control plane not) sees only the first attempt of
	// each new connection (a renewal opens one), no retry loop.
	var attempts atomic.Int64
	l, err := net.Listen("tcp", addrA)
	if err != nil {
		t.Fatal(err)
	}
	listening := time.Now()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	for loop.calls.Load()-before < 500 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	l.Close()
	loop.stop()
	t.Logf("connections to A's address in the last %s on B: %d", time.Since(listening).Round(100*time.Millisecond), attempts.Load())
	if n := attempts.Load(); n > 10 {
		t.Errorf("%d connections to A's dead address within a few seconds on B: the proxies hammer it", n)
	}
	t.Logf("A stopped: both proxies SYNCED on B after %s; %d calls (%d after A stopped), %d failed",
		reconnect.Round(time.Millisecond), loop.calls.Load(), loop.calls.Load()-before, loop.failures.Load())
	if f := loop.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail when the control plane fails over", f, loop.calls.Load(), loop.firstErr.Load())
	}
	if reconnect > 5*time.Second {
		t.Errorf("the proxies took %s to be SYNCED on B, want a few seconds at most", reconnect)
	}
	for name, p := range proxies {
		if v := metricValue(t, p, "trellis_control_plane_connected"); v != 1 {
			t.Errorf("%s's proxy: trellis_control_plane_connected %v after failing over, want 1", name, v)
		}
		if v := metricValue(t, p, "trellis_certificate_request_failures_total"); v != failures[name] {
			t.Errorf("%s's proxy: %v failed certificate requests after A stopped; a renewal must go to B without failing on A first", name, v-failures[name])
		}
	}

	// A change made on B reaches the proxies.
	meshtest.MustApply(t, b, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: deny}}\n")
	testutil.Eventually(t, "the deny applied on B to reach the proxies", func() bool { return get(url) == http.StatusForbidden })
}

// A proxy whose first control plane address is dead joins through the
// next: certificate, config stream and readiness, without one failed
// certificate request (the dead address costs one refused connection
// within the same call).
func TestProxyJoinsPastDeadControlPlane(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	dead := lowPortAddr(t)
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: "127.0.0.1:9", ControlAddrs: []string{dead, cp.GRPCAddr()}})
	if v := metricValue(t, p, "trellis_certificate_request_failures_total"); v != 0 {
		t.Errorf("%v failed certificate requests joining past a dead address, want 0", v)
	}
	if v := metricValue(t, p, "trellis_control_plane_connected"); v != 1 {
		t.Errorf("trellis_control_plane_connected %v, want 1", v)
	}
}

// lowPortAddr returns a loopback address whose port was free a moment
// ago, below Linux's ephemeral range (32768-60999 by default), so that no
// outgoing connection takes it while its server is away.
func lowPortAddr(t *testing.T) string {
	t.Helper()
	for range 1000 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000))))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}
	t.Fatal("no free port below 32000")
	return ""
}

// copyDir copies the files under src (a stopped control plane's data dir)
// to dst, keeping their modes.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), info.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// awaitSynced waits until cp lists catalog's and frontend's proxies as
// connected and SYNCED.
func awaitSynced(t *testing.T, cp *meshtest.ControlPlane, what string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		items, err := cp.Client(t).ListProxies(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		synced := map[string]bool{}
		for _, p := range items {
			if p.Connected && p.State == adminapi.ProxySynced {
				synced[p.Service] = true
			}
		}
		if synced["catalog"] && synced["frontend"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %+v", what, within, items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connected counts the proxies cp has a config stream with.
func connected(t *testing.T, cp *meshtest.ControlPlane) int {
	t.Helper()
	items, err := cp.Client(t).ListProxies(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range items {
		if p.Connected {
			n++
		}
	}
	return n
}

var callClient = &http.Client{Timeout: 5 * time.Second}

// get calls url and returns the status code, 0 when the call failed.
func get(url string) int {
	resp, err := callClient.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// callLoop calls one URL over and over, counting calls and failures (any
// answer but 200).
type callLoop struct {
	calls, failures atomic.Int64
	firstErr        atomic.Value // string
	done            chan struct{}
	wg              sync.WaitGroup
	once            sync.Once
}

func startCalls(t *testing.T, url string) *callLoop {
	l := &callLoop{done: make(chan struct{})}
	l.wg.Go(func() {
		for {
			select {
			case <-l.done:
				return
			default:
			}
			resp, err := callClient.Get(url)
			l.calls.Add(1)
			if err != nil {
				l.fail(err.Error())
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.fail(resp.Status)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	t.Cleanup(l.stop)
	return l
}

func (l *callLoop) fail(why string) {
	l.failures.Add(1)
	l.firstErr.CompareAndSwap(nil, why)
}

func (l *callLoop) stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}
