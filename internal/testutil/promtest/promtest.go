// Package promtest runs a real Prometheus (Debian's prometheus package)
// for tests: one process per test, on a loopback port, stopped when the
// test ends.
package promtest

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Path is where Debian's prometheus package puts the server.
const Path = "/usr/bin/prometheus"

// Start runs Prometheus with the configuration config (YAML) and returns
// its base URL once it is ready. It is stopped when the test ends; its
// configuration and output are logged if the test failed.
func Start(t testing.TB, config string) string {
	t.Helper()
	dir := t.TempDir()
	confFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	for range 3 {
		addr := freeAddr(t)
		cmd := exec.Command(Path, "--config.file="+confFile, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		base := "http://" + addr
		if ready(base, exited) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					b, _ := os.ReadFile(logFile.Name())
					t.Logf("prometheus config:\n%s\nprometheus output:\n%s", config, b)
				}
			})
			return base
		}
		stop() // most likely the port was taken meanwhile: try another
	}
	b, _ := os.ReadFile(logFile.Name())
	t.Fatalf("prometheus did not become ready; its output:\n%s", b)
	return ""
}

// ready waits up to 15s for Prometheus' /-/ready, false if it exited.
func ready(base string, exited chan struct{}) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// freeAddr is a loopback address no one listened on a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
