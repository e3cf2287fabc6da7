package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// trafficMesh is catalog (HTTP, answers "ok") and ledger (a TCP echo),
// each behind a proxy process, and a client-only frontend proxy with an
// upstream listener to each, under a Mesh that allows every call.
type trafficMesh struct {
	httpUp, tcpUp string
	hc            *http.Client
}

// startTrafficMesh starts the three proxies against cp and waits until
// both services answer through the frontend and all three are SYNCED.
func startTrafficMesh(t *testing.T, cp *controlProcess, dir string) *trafficMesh {
	t.Helper()
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
	appAddr := serveOK(t)
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

	startProxyProcess(t, cp, "catalog", tokenFile("catalog"), "--app-addr", appAddr,
		"--inbound-addr", freeAddr(t, "127.0.0.1"), "--http-proxy-addr", "off")
	startProxyProcess(t, cp, "ledger", tokenFile("ledger"), "--app-addr", tl.Addr().String(), "--protocol", "tcp",
		"--inbound-addr", freeAddr(t, "127.0.0.1"), "--http-proxy-addr", "off")
	m := &trafficMesh{
		httpUp: freeAddr(t, "127.0.0.1"), tcpUp: freeAddr(t, "127.0.0.1"),
		hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	startProxyProcess(t, cp, "frontend", tokenFile("frontend"), "--inbound-addr", freeAddr(t, "127.0.0.1"),
		"--upstream", "catalog.shop="+m.httpUp, "--upstream", "ledger.shop="+m.tcpUp, "--http-proxy-addr", "off")

	deadline := time.Now().Add(15 * time.Second)
	for m.callHTTP() != nil || m.callTCP(0) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("mesh not serving after 15s: http %v, tcp %v", m.callHTTP(), m.callTCP(0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	awaitSynced(t, env, 3)
	return m
}

// callHTTP makes one call to catalog on a new connection, so it is routed
// with the snapshot the frontend holds at that moment.
func (m *trafficMesh) callHTTP() error {
	resp, err := m.hc.Get("http://" + m.httpUp + "/")
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

// callTCP opens a connection to ledger and checks one echo.
func (m *trafficMesh) callTCP(i int) error {
	c, err := net.DialTimeout("tcp", m.tcpUp, 5*time.Second)
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

// trafficLoop is an HTTP caller and a TCP caller calling until Stop.
type trafficLoop struct {
	calls, failures atomic.Int64
	firstErr        atomic.Value
	stop            chan struct{}
	wg              sync.WaitGroup
	once            sync.Once
}

// startTraffic starts the callers, pausing between calls; the test's
// cleanup stops them.
func (m *trafficMesh) startTraffic(t *testing.T, pause time.Duration) *trafficLoop {
	l := &trafficLoop{stop: make(chan struct{})}
	for w := range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var err error
				if w == 0 {
					err = m.callHTTP()
				} else {
					err = m.callTCP(i)
				}
				l.calls.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s at %s", err, time.Now().Format("15:04:05.000")))
				}
				time.Sleep(pause)
			}
		}()
	}
	t.Cleanup(l.Stop)
	return l
}

// Stop stops the callers and waits for them.
func (l *trafficLoop) Stop() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// serveOK serves "ok" to every HTTP request on a loopback port until the
// test ends and returns its address.
func serveOK(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(l)
	t.Cleanup(func() { app.Close() })
	return l.Addr().String()
}
