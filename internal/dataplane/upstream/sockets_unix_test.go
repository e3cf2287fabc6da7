//go:build unix

package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/testutil"
)

func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ca, _ := testutil.NewCA(t, "trellis.test")
	cert, err := ca.IssueServing(spiffeid.RequireFromString("spiffe://trellis.test/ns/shop/sa/app"), time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}},
		&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
}

// Connections idle for over a second are checked before reuse: one the
// upstream closed while idle (FIN, or a TLS close_notify alone) is dropped
// and the next one tried; one idle past the pool's timeout is dropped
// unchecked. This waits the second out in real time, once for all cases.
func TestPoolIdleCheck(t *testing.T) {
	// Plain TCP: /close is answered and the connection closed at once.
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return req.URL.Path != "/close"
	})
	tcpPool, tcpDials := newTestPool(t, srv.addr, 4, time.Minute)
	alive, _ := mustGet(t, tcpPool)
	dead, _ := mustGet(t, tcpPool)
	if _, err := exchange(alive, "/"); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(dead, "/close"); err != nil {
		t.Fatal(err)
	}
	tcpPool.Put(alive)
	tcpPool.Put(dead) // on top: tried first
	testutil.Eventually(t, "the server to close one connection", func() bool { return srv.closed.Load() == 1 })

	// A pool whose idle timeout passes during the wait.
	shortPool, shortDials := newTestPool(t, srv.addr, 4, checkIdleAfter/2)
	expired, _ := mustGet(t, shortPool)
	shortPool.Put(expired)

	// TLS: the server sends close_notify, once the exchange is over, and
	// keeps the socket open.
	serverCfg, clientCfg := tlsConfigs(t)
	tl := listen(t)
	notifyNow := make(chan struct{})
	var serving sync.WaitGroup
	t.Cleanup(func() { tl.Close(); serving.Wait() })
	serving.Add(1)
	go func() {
		defer serving.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			serving.Add(1)
			go func() {
				defer serving.Done()
				tc := tls.Server(c, serverCfg)
				defer tc.Close()
				_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(tc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if req.URL.Path == "/close-notify" {
					<-notifyNow
					_ = tc.CloseWrite()
				}
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	tlsPool, tlsDials := newTestPool(t, tl.Addr().String(), 4, time.Minute)
	tlsPool.dial = func(ctx context.Context) (net.Conn, error) {
		tlsDials.dials.Add(1)
		d := tls.Dialer{Config: clientCfg}
		return d.DialContext(ctx, "tcp", tl.Addr().String())
	}
	tlsAlive, _ := mustGet(t, tlsPool)
	tlsDead, _ := mustGet(t, tlsPool)
	for _, x := range []struct {
		uc   *Conn
		path string
	}{{tlsAlive, "/"}, {tlsDead, "/close-notify"}} {
		if _, err := exchange(x.uc, x.path); err != nil {
			t.Fatal(err)
		}
	}
	tlsPool.Put(tlsAlive)
	tlsPool.Put(tlsDead)
	close(notifyNow)
	testutil.Eventually(t, "close_notify to reach the idle connection", func() bool {
		return socketHasData(tlsDead.C.(*tls.Conn).NetConn())
	})

	time.Sleep(checkIdleAfter + 100*time.Millisecond)

	if uc, reused := mustGet(t, tcpPool); !reused || uc != alive {
		t.Errorf("tcp: Get after the idle check: reused %v, got the live conn %v; want the live one", reused, uc == alive)
	} else if got, err := exchange(uc, "/after"); err != nil || got != "ok" {
		t.Errorf("tcp: exchange on the checked conn: %q, %v", got, err)
	}
	if _, reused := mustGet(t, tcpPool); reused || tcpDials.dials.Load() != 3 {
		t.Errorf("tcp: Get with only the dead conn left: reused %v, dials %d; want a dial", reused, tcpDials.dials.Load())
	}
	if uc, reused := mustGet(t, tlsPool); !reused || uc != tlsAlive {
		t.Errorf("tls: Get after the idle check: reused %v, got the live conn %v; want the live one", reused, uc == tlsAlive)
	}
	if _, reused := mustGet(t, tlsPool); reused || tlsDials.dials.Load() != 3 {
		t.Errorf("tls: Get with only the close_notify conn left: reused %v, dials %d; want a dial", reused, tlsDials.dials.Load())
	}
	if _, reused := mustGet(t, shortPool); reused || shortDials.dials.Load() != 2 {
		t.Errorf("Get past the idle timeout: reused %v, dials %d; want a dial", reused, shortDials.dials.Load())
	}
	testutil.Eventually(t, "the expired and dead connections to be closed", func() bool { return srv.closed.Load() == 2 })
}

func TestPeerGoneTCP(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(client net.Conn, server net.Conn)
		want bool
	}{
		{"open and quiet", func(net.Conn, net.Conn) {}, false},
		{"pipelined data", func(c, _ net.Conn) { _, _ = c.Write([]byte("GET / HTTP/1.1\r\n")) }, false},
		{"closed by the peer", func(c, _ net.Conn) { c.Close() }, true},
		{"half-closed by the peer", func(c, _ net.Conn) { _ = c.(*net.TCPConn).CloseWrite() }, true},
		{"reset by the peer", func(c, _ net.Conn) { _ = c.(*net.TCPConn).SetLinger(0); c.Close() }, true},
		{"closed here", func(_, s net.Conn) { s.Close() }, true},
	} {
		client, server := testutil.TCPPair(t, nil)
		tc.act(client, server)
		if tc.want {
			testutil.Eventually(t, tc.name+": PeerGone", func() bool { return PeerGone(server, false) })
			continue
		}
		if tc.name == "pipelined data" {
			// The data is there before asking, so the answer is not a race.
			testutil.Eventually(t, "pipelined data to arrive", func() bool { return socketHasData(server) })
		}
		if PeerGone(server, false) {
			t.Errorf("%s: PeerGone = true", tc.name)
		}
		if tc.name == "pipelined data" {
			// Peeking consumed nothing.
			buf := make([]byte, 16)
			if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "GET / HTTP/1.1\r\n" {
				t.Errorf("read after PeerGone: %q, %v", buf, err)
			}
		}
	}
}

// socketHasData peeks without blocking or consuming, for a test's own
// waiting.
func socketHasData(c net.Conn) bool {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return false
	}
	has := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		has = err == nil && n > 0
	})
	return has
}

func TestPeerGoneTLS(t *testing.T) {
	serverCfg, clientCfg := tlsConfigs(t)
	pair := func(t testing.TB) (client, server *tls.Conn) {
		c, s := testutil.TCPPair(t, nil)
		tc, ts := tls.Client(c, clientCfg), tls.Server(s, serverCfg)
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

	client, server := pair(t)
	if PeerGone(server, true) {
		t.Error("open TLS conn: PeerGone = true")
	}
	// A pipelined request is a data record, longer than an alert.
	if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the request to arrive", func() bool { return socketHasData(server.NetConn()) })
	if PeerGone(server, true) {
		t.Error("TLS conn with a pipelined request: PeerGone = true")
	}

	// close_notify alone, the socket still open, is the caller leaving.
	client, server = pair(t)
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "close_notify to be seen as gone", func() bool { return PeerGone(server, true) })
	// The same bytes on a conn not known to be TLS are just data.
	if PeerGone(server.NetConn(), false) {
		t.Error("close_notify with isTLS=false: PeerGone = true")
	}
}
