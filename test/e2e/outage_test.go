package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
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
	mustRun(t, runBinary, env, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n", "apply", "-f", "-")
	tokenFile := func(service string) string {
		tok := mustRun(t, runBinary, env, "", "token", "create", "--service", service, "--namespace", "shop")
		path := filepath.Join(dir, service+".token")
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(hl)
	t.Cleanup(func() { app.Close() })
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	startProxyProcess(t, cp, "catalog", tokenFile("catalog"), "--app-addr", hl.Addr().String(),
		"--inbound-addr", freeAddr(t, "127.0.0.1"), "--http-proxy-addr", "off")
	startProxyProcess(t, cp, "ledger", tokenFile("ledger"), "--app-addr", tl.Addr().String(), "--protocol", "tcp",
		"--inbound-addr", freeAddr(t, "127.0.0.1"), "--http-proxy-addr", "off")
	httpUp, tcpUp := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	startProxyProcess(t, cp, "frontend", tokenFile("frontend"), "--inbound-addr", freeAddr(t, "127.0.0.1"),
		"--upstream", "catalog.shop="+httpUp, "--upstream", "ledger.shop="+tcpUp, "--http-proxy-addr", "off")

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	callHTTP := func() error {
		resp, err := hc.Get("http://" + httpUp + "/")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}
	callTCP := func(i int) error {
		c, err := net.DialTimeout("tcp", tcpUp, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for callHTTP() != nil || callTCP(0) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("mesh not serving after 15s: http %v, tcp %v", callHTTP(), callTCP(0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	awaitSynced(t, env, proxies)

	// Callers: a new client connection per call, so every call is routed
	// with the snapshot the frontend proxy holds at that moment.
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if w == 0 {
					err = callHTTP()
				} else {
					err = callTCP(i)
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s at %s", err, time.Now().Format("15:04:05.000")))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	stopLoop := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoop)

	// The control plane saves its registry within 250ms of a change.
	time.Sleep(time.Second)
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	before := calls.Load()
	time.Sleep(outage)
	during := calls.Load() - before

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
	stopLoop()
	t.Logf("outage %s: %d calls (%d with the control plane dead), %d failed; control plane ready %.1fs and every proxy SYNCED %.1fs after the restart; states seen meanwhile: %v",
		outage, calls.Load(), during, failures.Load(), ready.Seconds(), synced.Seconds(), seen)
	if during < 100 {
		t.Errorf("only %d calls during the %s outage: the callers stalled", during, outage)
	}
	if f := failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail because the control plane was away", f, calls.Load(), firstErr.Load())
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
