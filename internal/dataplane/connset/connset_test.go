package connset_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/testutil"
)

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// readEOF reports whether c's peer closed: a read returns EOF (or a reset)
// rather than blocking.
func readEOF(t testing.TB, c net.Conn) error {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		return fmt.Errorf("read %d bytes, err %v; want the peer closed", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("peer never closed: %v", err)
	}
	return nil
}

// idleConn is a connection served request after request, like the fast
// path's: CloseIfIdle closes it only while it waits between requests.
type idleConn struct {
	net.Conn
	idle   atomic.Bool
	closed atomic.Int32
}

func (c *idleConn) CloseIfIdle() {
	if c.idle.Load() {
		c.closed.Add(1)
		c.Conn.Close()
	}
}

func TestShutdownClosesIdleConnsOnly(t *testing.T) {
	l := listen(t)
	var s connset.Set
	idleClient, idleServer := testutil.TCPPair(t, l)
	busyClient, busyServer := testutil.TCPPair(t, l)
	removedClient, removedServer := testutil.TCPPair(t, l)
	idle := &idleConn{Conn: idleServer}
	idle.idle.Store(true)
	busy := &idleConn{Conn: busyServer}
	removed := &idleConn{Conn: removedServer}
	removed.idle.Store(true)
	s.AddIdler(idle)
	s.AddIdler(busy)
	s.AddIdler(removed)
	s.RemoveIdler(removed)

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown with nothing tracked: %v", err)
	}
	if !s.IsClosed() {
		t.Fatal("IsClosed after Shutdown = false")
	}
	if err := readEOF(t, idleClient); err != nil {
		t.Errorf("idle conn: %v", err)
	}
	if got := busy.closed.Load(); got != 0 {
		t.Errorf("busy conn closed %d times by Shutdown, want 0", got)
	}
	if got := removed.closed.Load(); got != 0 {
		t.Errorf("removed idler closed %d times by Shutdown, want 0", got)
	}
	// The busy and removed connections still carry bytes.
	for _, p := range []struct {
		name     string
		from, to net.Conn
	}{{"busy", busyServer, busyClient}, {"removed", removedServer, removedClient}} {
		if _, err := p.from.Write([]byte("x")); err != nil {
			t.Errorf("%s: write after Shutdown: %v", p.name, err)
			continue
		}
		if _, err := io.ReadFull(p.to, make([]byte, 1)); err != nil {
			t.Errorf("%s: read after Shutdown: %v", p.name, err)
		}
	}

	// An idler that arrives after Shutdown began is closed at once if idle.
	lateClient, lateServer := testutil.TCPPair(t, l)
	late := &idleConn{Conn: lateServer}
	late.idle.Store(true)
	s.AddIdler(late)
	if got := late.closed.Load(); got != 1 {
		t.Errorf("idler added after Shutdown closed %d times, want 1", got)
	}
	if err := readEOF(t, lateClient); err != nil {
		t.Errorf("idler added after Shutdown: %v", err)
	}
}

func TestAddAfterShutdownRefused(t *testing.T) {
	var s connset.Set
	if s.IsClosed() {
		t.Fatal("IsClosed on a new Set = true")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, _ := testutil.TCPPair(t, listen(t))
	if s.Add(c) {
		t.Fatal("Add after Shutdown = true, want false")
	}
	// Remove of a conn never tracked must not unbalance the wait group: a
	// second Shutdown still returns at once.
	s.Remove(c)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestShutdownWaitsForTrackedConns(t *testing.T) {
	var s connset.Set
	client, server := testutil.TCPPair(t, listen(t))
	if !s.Add(server) {
		t.Fatal("Add = false on an open Set")
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	testutil.Eventually(t, "Shutdown to begin", s.IsClosed)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a conn is tracked", err)
	default:
	}
	// The tracked connection is left alone while it finishes.
	if _, err := server.Write([]byte("last")); err != nil {
		t.Fatalf("write on a tracked conn during Shutdown: %v", err)
	}
	if _, err := io.ReadFull(client, make([]byte, 4)); err != nil {
		t.Fatalf("read on a tracked conn during Shutdown: %v", err)
	}
	s.Remove(server)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil after the last conn was removed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last conn was removed")
	}
}

func TestShutdownClosesTrackedConnsWhenContextEnds(t *testing.T) {
	var s connset.Set
	l := listen(t)
	const n = 20
	clients := make([]net.Conn, n)
	for i := range clients {
		client, server := testutil.TCPPair(t, l)
		clients[i] = client
		if !s.Add(server) {
			t.Fatal("Add = false on an open Set")
		}
		// The conn's owner removes it when its reads fail, as a tunnel does.
		go func() {
			defer s.Remove(server)
			_, _ = io.Copy(io.Discard, server)
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	testutil.Eventually(t, "Shutdown to begin", s.IsClosed)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after its context ended")
	}
	for i, c := range clients {
		if err := readEOF(t, c); err != nil {
			t.Errorf("conn %d: %v", i, err)
		}
	}
}

// Add, Remove and Shutdown race: every Add that succeeds is waited for,
// none succeeds after Shutdown returned, and Shutdown returns once the last
// one is removed.
func TestAddRemoveRacingShutdown(t *testing.T) {
	for round := range 20 {
		var s connset.Set
		var (
			wg       sync.WaitGroup
			tracked  atomic.Int64
			finished atomic.Bool
			late     atomic.Int64
		)
		const workers = 100
		start := make(chan struct{})
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range 5 {
					c := &closer{}
					if !s.Add(c) {
						return
					}
					if finished.Load() {
						late.Add(1)
					}
					tracked.Add(1)
					runtime.Gosched()
					tracked.Add(-1)
					s.Remove(c)
				}
			}()
		}
		close(start)
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatalf("round %d: Shutdown = %v", round, err)
		}
		finished.Store(true)
		if n := tracked.Load(); n != 0 {
			t.Fatalf("round %d: Shutdown returned with %d conns still tracked", round, n)
		}
		wg.Wait()
		if n := late.Load(); n != 0 {
			t.Fatalf("round %d: %d Adds succeeded after Shutdown returned", round, n)
		}
	}
}

type closer struct{ n atomic.Int32 }

func (c *closer) Close() error { c.n.Add(1); return nil }

func TestChanListener(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4143}
	l := connset.NewChanListener(addr)
	if l.Addr() != addr {
		t.Fatalf("Addr = %v, want %v", l.Addr(), addr)
	}
	_, server := testutil.TCPPair(t, listen(t))
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		accepted <- c
	}()
	if !l.Deliver(server) {
		t.Fatal("Deliver on an open listener = false")
	}
	if got := <-accepted; got != server {
		t.Fatalf("Accept = %v, want the delivered conn", got)
	}

	// Close ends a blocked Accept and refuses further Deliver calls.
	acceptErr := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		acceptErr <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept blocked after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener = %v, want net.ErrClosed", err)
	}
	if l.Deliver(server) {
		t.Fatal("Deliver after Close = true, want false (the caller keeps the conn)")
	}
}

// An http.Server on a ChanListener serves every connection handed to it.
func TestChanListenerServesHTTP(t *testing.T) {
	tcp := listen(t)
	l := connset.NewChanListener(tcp.Addr())
	var served atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.WriteString(w, r.URL.Path)
	})}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	acceptDone := make(chan error, 1)
	go func() {
		acceptDone <- connset.AcceptLoop(tcp, func(c net.Conn) {
			if !l.Deliver(c) {
				c.Close()
			}
		})
	}()

	const clients, perClient = 20, 20
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for j := range perClient {
				path := fmt.Sprintf("/%d/%d", i, j)
				resp, err := c.Get("http://" + tcp.Addr().String() + path)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					failures.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != path {
					t.Errorf("GET %s: body %q, err %v", path, body, err)
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, clients*perClient)
	}
	if got := served.Load(); got != clients*perClient {
		t.Fatalf("served %d requests, want %d", got, clients*perClient)
	}
	tcp.Close()
	if err := <-acceptDone; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptLoop = %v, want net.ErrClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v, want http.ErrServerClosed", err)
	}
}

// flakyListener fails its first accepts the way an exhausted process does
// (EMFILE), then accepts for real.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

var errTooManyFiles = errors.New("accept: too many open files")

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, errTooManyFiles
	}
	return l.Listener.Accept()
}

func TestAcceptLoopRetriesErrorsAndStopsOnClose(t *testing.T) {
	fl := &flakyListener{Listener: listen(t)}
	fl.failures.Store(3)
	var handled atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- connset.AcceptLoop(fl, func(c net.Conn) {
			handled.Add(1)
			c.Close()
		})
	}()
	const conns = 200
	for i := range conns {
		c, err := net.Dial("tcp", fl.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if err := readEOF(t, c); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		c.Close()
	}
	if got := handled.Load(); got != conns {
		t.Fatalf("handled %d conns, want %d", got, conns)
	}
	if got := fl.failures.Load(); got >= 0 {
		t.Fatalf("accept errors left unretried: %d", got+1)
	}
	fl.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("AcceptLoop = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AcceptLoop did not return after its listener closed")
	}
}

// Adding a tracked connection again is a no-op: one Remove untracks it,
// and Shutdown does not wait for a second.
func TestAddTwiceTracksOnce(t *testing.T) {
	var s connset.Set
	c := &closeCounter{}
	if !s.Add(c) || !s.Add(c) {
		t.Fatal("Add refused before Shutdown")
	}
	s.Remove(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v after the one Remove, want nil at once", err)
	}
	if c.closed.Load() != 0 {
		t.Errorf("a removed connection was closed %d times by Shutdown", c.closed.Load())
	}
}

type closeCounter struct{ closed atomic.Int32 }

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }
