package dataplane

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/backoff"
)

// chanListener hands connections that were accepted and classified
// elsewhere (TLS handshake done, protocol sniffed) to an http.Server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// deliver passes c to the server; false means the listener is closed and
// the caller still owns c.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// connSet tracks connections the http.Server does not: raw tunnels,
// hijacked upgrades and connections still in their handshake. Shutdown waits
// for them, then closes the rest.
type connSet struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	idlers map[idleCloser]struct{}
	closed bool
	// closing mirrors closed for lock-free checks per request.
	closing atomic.Bool
	wg      sync.WaitGroup
}

// idleCloser is a tracked connection that serves requests one after the
// other (the HTTP/1.1 fast path): shutdown closes it while it waits
// between requests.
type idleCloser interface{ closeIfIdle() }

func (s *connSet) addIdler(c idleCloser) {
	s.mu.Lock()
	if s.idlers == nil {
		s.idlers = make(map[idleCloser]struct{})
	}
	s.idlers[c] = struct{}{}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		c.closeIfIdle()
	}
}

func (s *connSet) removeIdler(c idleCloser) {
	s.mu.Lock()
	delete(s.idlers, c)
	s.mu.Unlock()
}

// isClosed reports whether shutdown has begun.
func (s *connSet) isClosed() bool { return s.closing.Load() }

// add tracks c; false means shutdown has begun and c must not be served.
func (s *connSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[io.Closer]struct{})
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet) remove(c io.Closer) {
	s.mu.Lock()
	_, ok := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if ok {
		s.wg.Done()
	}
}

// shutdown refuses new conns and waits for tracked ones to finish; when ctx
// ends first, it closes them and returns ctx's error.
func (s *connSet) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.closing.Store(true)
	idle := make([]idleCloser, 0, len(s.idlers))
	for c := range s.idlers {
		idle = append(idle, c)
	}
	s.mu.Unlock()
	for _, c := range idle {
		c.closeIfIdle()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		closeQuietly(c)
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// acceptLoop calls handle for each accepted conn. It returns when l is
// closed; other accept errors (out of file descriptors, aborted
// connections) are retried after 5ms doubling to 1s, without jitter, as
// net/http does: the wait is for this process's resources, not a peer
// many clients share.
func acceptLoop(l net.Listener, handle func(net.Conn)) error {
	failures := 0
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(backoff.Delay(5*time.Millisecond, time.Second, failures))
			failures++
			continue
		}
		failures = 0
		handle(c)
	}
}
