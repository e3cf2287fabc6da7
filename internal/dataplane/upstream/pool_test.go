package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/testutil"
)

// rawServer serves HTTP/1.1 by hand on loopback, so a test can answer in
// ways a Go server would not (extra bytes, close after a keep-alive
// response, never). respond writes the answer to req; false closes the
// connection.
type rawServer struct {
	addr   string
	conns  atomic.Int64 // accepted
	closed atomic.Int64 // ended (EOF, error, or closed by respond)
	reqs   atomic.Int64
}

func startRawServer(t testing.TB, respond func(req *http.Request, c net.Conn, w *bufio.Writer) (keepOpen bool)) *rawServer {
	t.Helper()
	l := listen(t)
	s := &rawServer{addr: l.Addr().String()}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]bool{}
	)
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.closed.Add(1)
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute)) // a safety net: cleanup closes it
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					s.reqs.Add(1)
					keep := respond(req, c, bw)
					if bw.Flush() != nil || !keep {
						return
					}
				}
			}()
		}
	}()
	return s
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// okServer answers every request 200 with its path as the body.
func okServer(t testing.TB) *rawServer {
	return startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return true
	})
}

type countingDialer struct {
	addr  string
	dials atomic.Int64
}

func (d *countingDialer) dial(ctx context.Context) (net.Conn, error) {
	d.dials.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.addr)
}

func newTestPool(t testing.TB, addr string, maxIdle int, idleTimeout time.Duration) (*Pool, *countingDialer) {
	d := &countingDialer{addr: addr}
	p := NewPool(d.dial, maxIdle, idleTimeout)
	t.Cleanup(func() { p.CloseIdle(true) })
	return p, d
}

// exchange sends GET path on uc and returns the body of the answer.
func exchange(uc *Conn, path string) (string, error) {
	fmt.Fprintf(uc.BW, "GET %s HTTP/1.1\r\nHost: app\r\n\r\n", path)
	if err := uc.BW.Flush(); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(uc.BR, nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(body), err
}

func mustGet(t testing.TB, p *Pool) (*Conn, bool) {
	t.Helper()
	uc, reused, err := p.Get(context.Background())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	t.Cleanup(func() { uc.C.Close() })
	return uc, reused
}

func TestPoolPutThenGetReuses(t *testing.T) {
	srv := okServer(t)
	p, d := newTestPool(t, srv.addr, 4, time.Minute)
	first, reused := mustGet(t, p)
	if reused {
		t.Fatal("first Get reused = true from an empty pool")
	}
	for i := range 300 {
		uc, reused := first, false
		if i > 0 {
			uc, reused = mustGet(t, p)
			if !reused || uc != first {
				t.Fatalf("Get %d: reused %v, same conn %v; want the conn just put back", i, reused, uc == first)
			}
		}
		path := fmt.Sprintf("/r%d", i)
		if got, err := exchange(uc, path); err != nil || got != path {
			t.Fatalf("exchange %d: %q, %v", i, got, err)
		}
		p.Put(uc)
	}
	if got := d.dials.Load(); got != 1 {
		t.Errorf("dials = %d, want 1", got)
	}
	if got := srv.conns.Load(); got != 1 {
		t.Errorf("server saw %d connections, want 1", got)
	}
}

// A connection with bytes left over after its exchange (the upstream
// sent more than the response) is out of step: Put closes it.
func TestPoolDropsConnWithBufferedBytes(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
		return true
	})
	p, d := newTestPool(t, srv.addr, 4, time.Minute)
	uc, _ := mustGet(t, p)
	if got, err := exchange(uc, "/"); err != nil || got != "ok" {
		t.Fatalf("exchange: %q, %v", got, err)
	}
	testutil.Eventually(t, "the extra bytes to arrive", func() bool {
		_, _ = uc.BR.Peek(1)
		return uc.BR.Buffered() > 0
	})
	p.Put(uc)
	uc2, reused := mustGet(t, p)
	if reused || uc2 == uc || d.dials.Load() != 2 {
		t.Fatalf("Get after a dirty Put: reused %v, dials %d; want a new connection", reused, d.dials.Load())
	}
	testutil.Eventually(t, "the server to see the connection closed", func() bool { return srv.closed.Load() == 1 })
}

func TestPoolMaxIdle(t *testing.T) {
	srv := okServer(t)
	p, d := newTestPool(t, srv.addr, 2, time.Minute)
	var conns []*Conn
	for range 3 {
		uc, _ := mustGet(t, p)
		conns = append(conns, uc)
	}
	for _, uc := range conns {
		p.Put(uc)
	}
	testutil.Eventually(t, "the third connection to be closed", func() bool { return srv.closed.Load() == 1 })
	for i := range 2 {
		if uc, reused := mustGet(t, p); !reused || uc == conns[2] {
			t.Fatalf("Get %d: reused %v; want one of the two kept", i, reused)
		}
	}
	if _, reused := mustGet(t, p); reused || d.dials.Load() != 4 {
		t.Fatalf("Get from an empty pool: reused %v, dials %d; want a dial", reused, d.dials.Load())
	}
}

func TestPoolCloseIdle(t *testing.T) {
	srv := okServer(t)
	p, d := newTestPool(t, srv.addr, 4, time.Minute)
	a, _ := mustGet(t, p)
	b, _ := mustGet(t, p)
	p.Put(a)
	p.Put(b)
	p.CloseIdle(false)
	testutil.Eventually(t, "idle connections closed", func() bool { return srv.closed.Load() == 2 })

	// Not closing: the pool keeps connections again.
	c, reused := mustGet(t, p)
	if reused {
		t.Fatal("Get after CloseIdle reused a closed connection")
	}
	p.Put(c)
	if again, reused := mustGet(t, p); !reused || again != c {
		t.Fatal("CloseIdle(false) stopped the pool keeping connections")
	}

	// Closing: idle ones go, and so does anything put back later.
	p.Put(c)
	inUse, _ := mustGet(t, p) // c again
	p.CloseIdle(true)
	p.Put(inUse)
	testutil.Eventually(t, "a connection put back after CloseIdle(true) to be closed", func() bool { return srv.closed.Load() == 3 })
	if _, reused := mustGet(t, p); reused {
		t.Fatal("Get after CloseIdle(true) reused a connection")
	}
	if got := d.dials.Load(); got != 4 {
		t.Errorf("dials = %d, want 4", got)
	}
}

// Many goroutines sharing a pool: every exchange gets its own answer, and
// the pool dials no more than were ever in use at once.
func TestPoolConcurrent(t *testing.T) {
	srv := okServer(t)
	const workers, each = 16, 40
	p, d := newTestPool(t, srv.addr, workers, time.Minute)
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				uc, _, err := p.Get(context.Background())
				if err != nil {
					t.Errorf("Get: %v", err)
					failures.Add(1)
					continue
				}
				path := fmt.Sprintf("/w%d/%d", w, i)
				if got, err := exchange(uc, path); err != nil || got != path {
					t.Errorf("exchange %s: %q, %v", path, got, err)
					failures.Add(1)
					uc.C.Close()
					continue
				}
				p.Put(uc)
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d exchanges failed", n, workers*each)
	}
	if got := d.dials.Load(); got > workers {
		t.Errorf("dials = %d for %d workers", got, workers)
	}
	if got := srv.reqs.Load(); got != workers*each {
		t.Errorf("server answered %d requests, want %d", got, workers*each)
	}
}

// watchedCaller is a Caller backed by the caller's real connection: it is
// gone once a read on that connection ends. It counts how often a waiting
// read asked.
type watchedCaller struct {
	gone   atomic.Bool
	checks atomic.Int64
}

func watchCaller(c net.Conn) *watchedCaller {
	w := &watchedCaller{}
	go func() {
		_, _ = io.Copy(io.Discard, c)
		w.gone.Store(true)
	}()
	return w
}

func (w *watchedCaller) Gone() bool {
	w.checks.Add(1)
	return w.gone.Load()
}

// A read waiting on a silent upstream keeps waiting while the caller is
// there, and gives up with relay.ErrClientGone once it left.
func TestWatchGivesUpWhenCallerGone(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, c net.Conn, _ *bufio.Writer) bool {
		_, _ = io.Copy(io.Discard, c) // never answers
		return false
	})
	p, _ := newTestPool(t, srv.addr, 4, time.Minute)
	callerClient, callerServer := testutil.TCPPair(t, nil)
	caller := watchCaller(callerServer)
	uc, _ := mustGet(t, p)
	defer uc.C.Close()
	uc.Watch(caller)
	_, _ = io.WriteString(uc.BW, "GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
	if err := uc.BW.Flush(); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := uc.BR.ReadByte()
		readErr <- err
	}()
	testutil.Eventually(t, "the waiting read to check its caller twice", func() bool { return caller.checks.Load() >= 2 })
	select {
	case err := <-readErr:
		t.Fatalf("read returned %v while the caller was there", err)
	default:
	}
	callerClient.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, relay.ErrClientGone) {
			t.Fatalf("read = %v, want relay.ErrClientGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read kept waiting after the caller left")
	}
}

// A slow answer (longer than several watch intervals) still arrives while
// the caller stays; once the connection is back in the pool the watch is
// over, and the next user's slow read is not cut short by the old caller.
func TestWatchSlowAnswerAndPutDisarms(t *testing.T) {
	srv := startRawServer(t, func(req *http.Request, _ net.Conn, w *bufio.Writer) bool {
		time.Sleep(2*watchInterval + watchInterval/2) // the upstream is slow, not the test
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
		return true
	})
	p, _ := newTestPool(t, srv.addr, 4, time.Minute)
	callerClient, callerServer := testutil.TCPPair(t, nil)
	caller := watchCaller(callerServer)
	uc, _ := mustGet(t, p)
	uc.Watch(caller)
	if got, err := exchange(uc, "/"); err != nil || got != "slow" {
		t.Fatalf("slow exchange with the caller present: %q, %v", got, err)
	}
	if caller.checks.Load() < 2 {
		t.Fatalf("caller checked %d times during a slow read, want at least 2", caller.checks.Load())
	}
	p.Put(uc)
	callerClient.Close()
	testutil.Eventually(t, "the caller to be gone", caller.gone.Load)
	checks := caller.checks.Load()

	again, reused := mustGet(t, p)
	if !reused || again != uc {
		t.Fatal("the watched connection was not kept")
	}
	if got, err := exchange(again, "/"); err != nil || got != "slow" {
		t.Fatalf("slow exchange after Put, without a watch: %q, %v", got, err)
	}
	if got := caller.checks.Load(); got != checks {
		t.Errorf("the previous caller was checked %d more times after Put", got-checks)
	}
}
