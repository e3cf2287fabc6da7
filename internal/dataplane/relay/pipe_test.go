package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/testutil"
)

// pipeProxy accepts callers on loopback and pipes each to a new connection
// to dest, as a tunnel does. prefix, when set, stands for bytes read from
// the caller before the tunnel began.
type pipeProxy struct {
	addr           string
	received, sent prometheus.Counter
	reg            *prometheus.Registry
	pipes          sync.WaitGroup
	done           atomic.Int64
}

func startPipeProxy(t testing.TB, dest, prefix string) *pipeProxy {
	t.Helper()
	l := listen(t)
	p := &pipeProxy{
		addr:     l.Addr().String(),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "received"}),
		sent:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sent"}),
		reg:      prometheus.NewRegistry(),
	}
	p.reg.MustRegister(p.received, p.sent)
	t.Cleanup(func() { l.Close(); p.pipes.Wait() })
	p.pipes.Add(1)
	go func() {
		defer p.pipes.Done()
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			p.pipes.Add(1)
			go func() {
				defer p.pipes.Done()
				defer p.done.Add(1)
				b, err := net.Dial("tcp", dest)
				if err != nil {
					a.Close()
					return
				}
				var ar io.Reader = a
				if prefix != "" {
					ar = io.MultiReader(strings.NewReader(prefix), a)
				}
				relay.Pipe(a, ar, b, b, p.received, p.sent)
			}()
		}
	}()
	return p
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// echoThrough is testutil.EchoThrough for goroutines other than the
// test's: it writes msg, half-closes, and returns all it reads back.
func echoThrough(addr string, msg []byte) ([]byte, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return got, err
	}
	return got, <-werr
}

func TestPipeEchoWithHalfClose(t *testing.T) {
	echo := testutil.StartTCPEcho(t)
	p := startPipeProxy(t, echo, "")
	msg := randomBytes(t, 4<<20)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	// EchoThrough half-closes after writing: the echo only ends (and its
	// reply only reaches EOF) if the FIN travels through the pipe.
	if got := testutil.EchoThrough(t, c, msg); !bytes.Equal(got, msg) {
		t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(msg))
	}
	testutil.Eventually(t, "the pipe to end", func() bool { return p.done.Load() == 1 })
	if got := testutil.Metric(t, p.reg, "received", nil); got != float64(len(msg)) {
		t.Errorf("received counter = %v, want %d", got, len(msg))
	}
	if got := testutil.Metric(t, p.reg, "sent", nil); got != float64(len(msg)) {
		t.Errorf("sent counter = %v, want %d", got, len(msg))
	}
}

// A caller's half-close reaches the destination as EOF, and the
// destination can still answer after it.
func TestPipeAnswerAfterHalfClose(t *testing.T) {
	dest := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		got, err := io.ReadAll(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "read %d bytes: %s", len(got), got)
	})
	p := startPipeProxy(t, dest, "")
	const workers, each = 10, 20
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msg := fmt.Sprintf("request %d/%d", w, i)
				got, err := echoThrough(p.addr, []byte(msg))
				if want := fmt.Sprintf("read %d bytes: %s", len(msg), msg); err != nil || string(got) != want {
					t.Errorf("answer %q, %v; want %q", got, err, want)
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d exchanges failed", n, workers*each)
	}
	testutil.Eventually(t, "every pipe to end", func() bool { return p.done.Load() == workers*each })
}

func TestPipeConcurrentEchoes(t *testing.T) {
	echo := testutil.StartTCPEcho(t)
	p := startPipeProxy(t, echo, "")
	const conns = 200
	var wg sync.WaitGroup
	var failures, total atomic.Int64
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := randomBytes(t, 1024+i*97)
			total.Add(int64(len(msg)))
			if got, err := echoThrough(p.addr, msg); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("conn %d: echoed %d bytes, %v; want %d", i, len(got), err, len(msg))
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d tunnels failed", n, conns)
	}
	testutil.Eventually(t, "every pipe to end", func() bool { return p.done.Load() == conns })
	if got, want := testutil.Metric(t, p.reg, "received", nil), float64(total.Load()); got != want {
		t.Errorf("received counter = %v, want %v", got, want)
	}
}

// Bytes read from the caller before the tunnel began go first.
func TestPipeBufferedPrefix(t *testing.T) {
	p := startPipeProxy(t, testutil.StartTCPEcho(t), "early bytes|")
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(testutil.EchoThrough(t, c, []byte("rest"))); got != "early bytes|rest" {
		t.Fatalf("echoed %q, want %q", got, "early bytes|rest")
	}
}

// A destination that resets ends the tunnel: the caller is closed rather
// than left waiting.
func TestPipeResetClosesCaller(t *testing.T) {
	dest := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := br.ReadByte(); err != nil {
			return
		}
		_ = c.(*net.TCPConn).SetLinger(0)
	})
	p := startPipeProxy(t, dest, "")
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The caller has not half-closed: only the failed direction can end
	// the other one.
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("caller read %d bytes, %v; want the tunnel closed", n, err)
	}
	testutil.Eventually(t, "the pipe to end", func() bool { return p.done.Load() == 1 })
}

// wrapped hides a conn's CloseWrite behind NetConn, as connection
// wrappers (the inbound's peeked conn, the fast path's) do.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// CloseWrite half-closes TCP (FIN) and TLS (close_notify), through
// wrappers: the peer reads EOF and can still answer.
func TestCloseWrite(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.test")
	cert, err := ca.IssueServing(spiffeid.RequireFromString("spiffe://trellis.test/ns/shop/sa/echo"), time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsPair := func(t testing.TB) (client, server net.Conn) {
		c, s := testutil.TCPPair(t, nil)
		tc := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
		ts := tls.Server(s, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}})
		errs := make(chan error, 1)
		go func() { errs <- ts.Handshake() }()
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		return tc, ts
	}
	tcpPair := func(t testing.TB) (net.Conn, net.Conn) { return testutil.TCPPair(t, nil) }
	for _, tc := range []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
		wrap bool
	}{
		{"tcp", tcpPair, false},
		{"tcp wrapped", tcpPair, true},
		{"tls", tlsPair, false},
		{"tls wrapped", tlsPair, true},
	} {
		client, server := tc.pair(t)
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		_ = server.SetDeadline(time.Now().Add(10 * time.Second))
		var c any = client
		if tc.wrap {
			c = wrapped{client}
		}
		if _, err := client.Write([]byte("last")); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !relay.CloseWrite(c) {
			t.Errorf("%s: CloseWrite = false", tc.name)
			continue
		}
		if got, err := io.ReadAll(server); err != nil || string(got) != "last" {
			t.Errorf("%s: peer read %q, %v; want the bytes, then EOF", tc.name, got, err)
		}
		if _, err := server.Write([]byte("answer")); err != nil {
			t.Errorf("%s: peer cannot answer after the half-close: %v", tc.name, err)
			continue
		}
		if got, err := io.ReadFull(client, make([]byte, 6)); err != nil || got != 6 {
			t.Errorf("%s: answer after the half-close: %d bytes, %v", tc.name, got, err)
		}
	}

	// Neither an in-memory pipe nor a TLS conn before its handshake can
	// half-close: the caller must close both ways instead.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if relay.CloseWrite(a) {
		t.Error("CloseWrite(net.Pipe) = true")
	}
	c, _ := testutil.TCPPair(t, nil)
	if relay.CloseWrite(tls.Client(c, &tls.Config{InsecureSkipVerify: true})) {
		t.Error("CloseWrite before the TLS handshake = true")
	}
}

// upgradeBackend answers Upgrade requests: /echo switches to "echo" and
// echoes (half-closing after EOF), /other switches to a protocol nobody
// asked for, anything else is refused with 403.
func upgradeBackend(t testing.TB) string {
	return serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/echo":
			if req.Header.Get("Upgrade") != "echo" || !strings.EqualFold(req.Header.Get("Connection"), "upgrade") {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Backend: yes\r\n\r\n")
			_, _ = io.Copy(c, br)
			_ = c.(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, c)
		case "/other":
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\ndenied\n")
		}
	})
}

type upgradeResult struct {
	code int
	err  error
}

func startUpgradeProxy(t testing.TB, backend string, conns *connset.Set) (string, chan upgradeResult) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	results := make(chan upgradeResult, 100)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := relay.ForwardUpgrade(w, r, tr, "http", backend, relay.UpgradeType(r), conns)
		if err != nil {
			relay.PlainError(w, http.StatusBadGateway, "trellis: "+err.Error()+"\n")
		}
		results <- upgradeResult{code, err}
	}))
	t.Cleanup(front.Close)
	return front.Listener.Addr().String(), results
}

func upgradeRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\n\r\n"
}

func TestForwardUpgradeRelays(t *testing.T) {
	var conns connset.Set
	front, results := startUpgradeProxy(t, upgradeBackend(t), &conns)
	const tunnels = 50
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := upgradeAndEcho(fmt.Sprintf("tunnel %d", i), front); err != nil {
				t.Error(err)
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d upgraded tunnels failed", n, tunnels)
	}
	for range tunnels {
		if r := <-results; r.code != http.StatusSwitchingProtocols || r.err != nil {
			t.Errorf("ForwardUpgrade = %d, %v; want 101, nil", r.code, r.err)
		}
	}
	// Every tunnel was tracked and given back: Shutdown has nothing to wait for.
	if err := conns.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// upgradeAndEcho upgrades a connection to the front proxy, sends msg
// (part of it along with the request), half-closes, and checks the echo.
func upgradeAndEcho(msg, front string) error {
	c, err := net.Dial("tcp", front)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, upgradeRequest("/echo")); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("read 101: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" ||
		resp.Header.Get("Connection") != "Upgrade" || resp.Header.Get("X-Backend") != "yes" {
		return fmt.Errorf("response %d %v, want 101 with Upgrade: echo and the backend's headers", resp.StatusCode, resp.Header)
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(br)
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

func TestForwardUpgradeRefusedOrMismatched(t *testing.T) {
	var conns connset.Set
	front, results := startUpgradeProxy(t, upgradeBackend(t), &conns)

	resp, body := rawExchange(t, front, upgradeRequest("/deny"))
	if resp.StatusCode != http.StatusForbidden || body != "denied\n" {
		t.Errorf("refused upgrade: %d %q, want the backend's 403", resp.StatusCode, body)
	}
	if r := <-results; r.code != http.StatusForbidden || r.err != nil {
		t.Errorf("ForwardUpgrade = %d, %v; want 403, nil", r.code, r.err)
	}

	resp, body = rawExchange(t, front, upgradeRequest("/other"))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `asked "echo", got "other"`) {
		t.Errorf("mismatched upgrade: %d %q, want 502 naming both protocols", resp.StatusCode, body)
	}
	if r := <-results; r.code != 0 || r.err == nil {
		t.Errorf("ForwardUpgrade = %d, %v; want 0 and an error", r.code, r.err)
	}
}

// Shutdown ends an upgraded tunnel when its context ends, and a tunnel
// that would begin after Shutdown is closed at once.
func TestForwardUpgradeShutdown(t *testing.T) {
	var conns connset.Set
	front, results := startUpgradeProxy(t, upgradeBackend(t), &conns)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(c, upgradeRequest("/echo"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	_, _ = io.WriteString(c, "ping")
	if got, err := io.ReadAll(io.LimitReader(br, 4)); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := conns.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an open tunnel = %v, want context.Canceled", err)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("tunnel still open after Shutdown: read %d, %v", n, err)
	}
	if r := <-results; r.code != http.StatusSwitchingProtocols || r.err != nil {
		t.Errorf("ForwardUpgrade = %d, %v; want 101, nil", r.code, r.err)
	}

	late, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	_ = late.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(late, upgradeRequest("/echo"))
	if b, err := io.ReadAll(late); err != nil || len(b) != 0 {
		t.Fatalf("upgrade after Shutdown: read %q, %v; want the connection closed without an answer", b, err)
	}
	if r := <-results; r.code != http.StatusSwitchingProtocols || r.err != nil {
		t.Errorf("ForwardUpgrade after Shutdown = %d, %v; want 101, nil", r.code, r.err)
	}
}
