package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxyProcess is a `trellis proxy` subprocess.
type proxyProcess struct {
	Admin  string
	cmd    *exec.Cmd
	stderr syncBuffer
	exited chan struct{}
}

func startProxyProcess(t *testing.T, cp *controlProcess, service, tokenFile string, extra ...string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{Admin: freeAddr(t, "127.0.0.1"), exited: make(chan struct{})}
	args := append([]string{"proxy", "--control", cp.GRPCAddr, "--ca-file", cp.caFile(), "--token-file", tokenFile,
		"--service", service, "--namespace", "shop", "--admin-addr", p.Admin, "--log-format", "json", "--drain-timeout", "5s"}, extra...)
	p.cmd = exec.Command(trellisBin, args...)
	p.cmd.Env = cleanEnv()
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("trellis %s\nstderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + p.Admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("proxy %s exited with %d before it was ready:\n%s", service, p.cmd.ProcessState.ExitCode(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s not ready after 15s:\n%s", service, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProxiesAsProcesses runs a control plane and two proxies as real
// processes: a call through the client proxy reaches the app over mTLS
// with the caller's identity; SIGTERM drains an in-flight request and
// exits 0; then calls fail fast with 503.
func TestProxiesAsProcesses(t *testing.T) {
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

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		io.WriteString(w, r.Header.Get("X-Forwarded-Client-Cert"))
	})}
	go app.Serve(l)
	t.Cleanup(func() { app.Close() })

	inbound := freeAddr(t, "127.0.0.1")
	server := startProxyProcess(t, cp, "catalog", tokenFile("catalog"), "--app-addr", l.Addr().String(), "--inbound-addr", inbound, "--http-proxy-addr", "off")
	upstream := freeAddr(t, "127.0.0.1")
	startProxyProcess(t, cp, "frontend", tokenFile("frontend"), "--inbound-addr", freeAddr(t, "127.0.0.1"),
		"--upstream", "catalog.shop="+upstream, "--http-proxy-addr", freeAddr(t, "127.0.0.1"))

	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string, error) {
		resp, err := hc.Get("http://" + upstream + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	var code int
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, body, err = get("/"); err == nil && code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := "By=spiffe://trellis.local/ns/shop/sa/catalog;URI=spiffe://trellis.local/ns/shop/sa/frontend"
	if code != http.StatusOK || body != want {
		t.Fatalf("through two proxy processes: %d %q (%v), want 200 %q", code, body, err, want)
	}

	// SIGTERM the server proxy while a slow request is in flight.
	type res struct {
		code int
		err  error
	}
	slow := make(chan res, 1)
	go func() { c, _, err := get("/slow"); slow <- res{c, err} }()
	time.Sleep(300 * time.Millisecond)
	if err := server.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := <-slow; r.err != nil || r.code != http.StatusOK {
		t.Errorf("in-flight request during SIGTERM: %d %v, want 200 (drained)", r.code, r.err)
	}
	select {
	case <-server.exited:
		if c := server.cmd.ProcessState.ExitCode(); c != 0 {
			t.Errorf("proxy exit code %d after SIGTERM, want 0", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy still running 10s after SIGTERM")
	}

	// The endpoint is gone: calls fail fast with 503, nothing hangs.
	start := time.Now()
	code, body, err = get("/")
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("after the server proxy exited: %d %q %v, want 503", code, body, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("503 took %s; a dead endpoint must fail fast", d)
	}
}
