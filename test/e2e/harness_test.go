package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
)

// trellisBin and testappBin are the binaries TestMain builds.
var trellisBin, testappBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the tests skip themselves
	}
	dir, err := os.MkdirTemp("", "trellis-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	trellisBin = filepath.Join(dir, "trellis")
	testappBin = filepath.Join(dir, "testapp")
	err = build(trellisBin, "./cmd/trellis")
	if err == nil {
		err = build(testappBin, "./test/e2e/testapp")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds pkg of this module into out.
func build(out, pkg string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/trellis: %w\n%s", err, output)
	}
	return nil
}

// moduleRoot is the directory of go.mod: from `go env GOMOD`, or two levels
// up from this package.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod), nil
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	return root, nil
}

func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

// cleanEnv is the test's environment without the variables the CLI reads,
// plus env ("KEY=value").
func cleanEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TRELLIS_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// freeAddr returns host:port with a port that was free a moment ago.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		// The kernel may hand a port just closed out again: two calls in
		// a row once gave a control plane the same port for --grpc-addr
		// and --api-addr. No port is handed out twice in one run.
		handedOutMu.Lock()
		seen := handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if !seen {
			return net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// syncBuffer is a bytes.Buffer safe for a subprocess to write while the
// test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// controlProcess is a `trellis control` subprocess.
type controlProcess struct {
	DataDir  string
	GRPCAddr string
	APIURL   string // what the CLI dials: 127.0.0.1 even when listening on 0.0.0.0
	args     []string
	cmd      *exec.Cmd
	stderr   syncBuffer // the logs
	exited   chan struct{}
}

// startControl starts `trellis control` on dataDir with JSON logs, the gRPC
// listener on a free loopback port and the admin API on apiAddr (a free
// loopback port when empty), plus extra flags. The process is killed when
// the test ends, and its logs are shown if the test failed.
func startControl(t *testing.T, dataDir, apiAddr string, extra ...string) *controlProcess {
	t.Helper()
	if apiAddr == "" {
		apiAddr = freeAddr(t, "127.0.0.1")
	}
	host, port, err := net.SplitHostPort(apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	scheme := "https"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		scheme = "http"
	}
	grpcAddr := freeAddr(t, "127.0.0.1")
	args := append([]string{"control", "--data-dir", dataDir, "--grpc-addr", grpcAddr,
		"--api-addr", apiAddr, "--log-format", "json"}, extra...)
	return runControlProcess(t, dataDir, grpcAddr, scheme+"://"+net.JoinHostPort("127.0.0.1", port), args)
}

// restart starts the control plane again with the same arguments (same
// data dir and ports) after it exited.
func (p *controlProcess) restart(t *testing.T) *controlProcess {
	t.Helper()
	select {
	case <-p.exited:
	default:
		t.Fatal("restart: the control plane is still running")
	}
	return runControlProcess(t, p.DataDir, p.GRPCAddr, p.APIURL, p.args)
}

func runControlProcess(t *testing.T, dataDir, grpcAddr, apiURL string, args []string) *controlProcess {
	t.Helper()
	p := &controlProcess{
		DataDir:  dataDir,
		GRPCAddr: grpcAddr,
		APIURL:   apiURL,
		args:     args,
		cmd:      exec.Command(trellisBin, args...),
		exited:   make(chan struct{}),
	}
	p.cmd.Env = cleanEnv()
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit code is read from ProcessState
		close(p.exited)
	}()
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
	return p
}

// httpClient trusts the data dir's mesh root for an https admin API.
func (p *controlProcess) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(p.APIURL, "https:") {
		pem, err := os.ReadFile(p.caFile())
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("no certificates in " + p.caFile())
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}, nil
}

func (p *controlProcess) caFile() string { return filepath.Join(p.DataDir, identity.RootCertFile) }

func (p *controlProcess) tokenFile() string {
	return filepath.Join(p.DataDir, controlplane.AdminTokenFile)
}

// env points the CLI at p.
func (p *controlProcess) env() []string {
	env := []string{"TRELLIS_API=" + p.APIURL, "TRELLIS_TOKEN_FILE=" + p.tokenFile()}
	if strings.HasPrefix(p.APIURL, "https:") {
		env = append(env, "TRELLIS_CA_FILE="+p.caFile())
	}
	return env
}

// AwaitReady waits until /readyz answers 200.
func (p *controlProcess) AwaitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("control plane exited with code %d before it was ready", p.cmd.ProcessState.ExitCode())
		default:
		}
		c, err := p.httpClient()
		if err == nil {
			var resp *http.Response
			resp, err = c.Get(p.APIURL + "/readyz")
			if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
				t.Fatalf("admin API certificate not trusted by %s: %v", p.caFile(), err)
			}
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
				err = errors.New(resp.Status)
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("control plane not ready at %s/readyz: %v", p.APIURL, last)
}

// Stop sends SIGTERM and returns the exit code.
func (p *controlProcess) Stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	return p.AwaitExit(t)
}

// AwaitExit waits for the process to exit and returns its exit code.
func (p *controlProcess) AwaitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(15 * time.Second):
		t.Fatal("control plane still running 15s later")
		return -1
	}
}

// Logs returns what the process wrote to stderr so far.
func (p *controlProcess) Logs() string { return p.stderr.String() }

// result is what one CLI command did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runner runs one CLI command with env ("KEY=value") added to a clean
// environment.
type runner func(t *testing.T, env []string, stdin string, args ...string) result

// runBinary runs the built binary as a subprocess.
func runBinary(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, trellisBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("trellis %s: %v", strings.Join(args, " "), err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// runInProcess runs cli.Main, with env set for the rest of the test.
func runInProcess(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	for _, k := range []string{"TRELLIS_API", "TRELLIS_TOKEN", "TRELLIS_TOKEN_FILE", "TRELLIS_CA_FILE"} {
		t.Setenv(k, "")
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	var stdout, stderr bytes.Buffer
	code := cli.Main(t.Context(), args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, run runner, env []string, stdin string, args ...string) string {
	t.Helper()
	r := run(t, env, stdin, args...)
	if r.code != 0 {
		t.Fatalf("trellis %s: %v", strings.Join(args, " "), r)
	}
	return r.stdout
}
