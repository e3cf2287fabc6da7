package testutil

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LogBuffer keeps log output for assertions and passes it to t.Log; Logger
// writes to it at debug level.
type LogBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	t      testing.TB
	Logger *slog.Logger
	done   atomic.Bool
}

// NewLogBuffer returns a LogBuffer bound to t.
func NewLogBuffer(t testing.TB) *LogBuffer {
	b := &LogBuffer{t: t}
	b.Logger = slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() { b.done.Store(true) })
	return b
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	if !b.done.Load() {
		b.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Contains reports whether the log holds s.
func (b *LogBuffer) Contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

// WaitLog waits (5 s at most) for a log line containing all of parts.
func (b *LogBuffer) WaitLog(t testing.TB, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		ok := false
		for line := range strings.SplitSeq(b.buf.String(), "\n") {
			all := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					all = false
					break
				}
			}
			if all {
				ok = true
				break
			}
		}
		b.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line containing %q", parts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CountLines counts log lines holding every one of parts.
func (b *LogBuffer) CountLines(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for line := range strings.SplitSeq(b.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// HTTPClient is an HTTP/1.1 keep-alive client, the way an app talks to its
// sidecar.
func HTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// H2CClient speaks HTTP/2 with prior knowledge.
func H2CClient(t testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// StartTCPEcho serves a TCP echo on loopback that half-closes when the
// peer does, and returns its address.
func StartTCPEcho(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}

// FreePort is a loopback TCP port that was free a moment ago, for a
// server process the test starts on it.
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		// The kernel may hand a port just closed out again; two calls in
		// a row must not return the same one (a process given one port
		// for two listeners fails to start).
		freePortsMu.Lock()
		seen := freePorts[port]
		freePorts[port] = true
		freePortsMu.Unlock()
		if !seen {
			return port
		}
	}
}

var (
	freePortsMu sync.Mutex
	freePorts   = map[int]bool{}
)
