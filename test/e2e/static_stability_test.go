package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
	mustRun(t, runBinary, env, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n", "apply", "-f", "-")
	tokenFile := func(service string) string {
		tok := mustRun(t, runBinary, env, "", "token", "create", "--service", service, "--namespace", "shop")
		path := filepath.Join(dir, service+".token")
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// catalog speaks HTTP; ledger is an opaque TCP echo service.
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
	// Both paths work before anything happens.
	deadline := time.Now().Add(15 * time.Second)
	for callHTTP() != nil || callTCP(0) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("mesh not serving after 15s: http %v, tcp %v", callHTTP(), callTCP(0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	awaitSynced(t, env, 3)

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
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	stopLoop := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(stopLoop)

	// The control plane saves its registry within 250ms of a change.
	time.Sleep(time.Second)
	t.Logf("SIGKILL to the control plane at %s", time.Now().Format("15:04:05.000"))
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	before := calls.Load()
	time.Sleep(3 * time.Second)
	during := calls.Load() - before
	if during < 50 {
		t.Errorf("only %d calls in 3s with the control plane dead: the loop stalled", during)
	}

	cp = cp.restart(t)
	cp.AwaitReady(t)
	t.Logf("control plane ready again at %s", time.Now().Format("15:04:05.000"))
	// Every proxy reconnects by itself (backoff with jitter) and is SYNCED.
	awaitSynced(t, env, 3)
	time.Sleep(500 * time.Millisecond)
	stopLoop()
	t.Logf("%d calls (%d with the control plane dead), %d failed", calls.Load(), during, failures.Load())
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d calls failed (first: %v); none may fail because the control plane died", f, calls.Load(), firstErr.Load())
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
