// Package connset tracks the data path's connections: the Set that
// shutdown closes (raw tunnels, hijacked upgrades, connections in their
// handshake, idle fast-path connections), the ChanListener that hands
// classified connections to an http.Server, and the accept loop.
//
// It depends on the standard library and internal/backoff only.
package connset

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

// ChanListener hands connections that were accepted and classified
// elsewhere (TLS handshake done, protocol sniffed) to an http.Server.
type ChanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

// NewChanListener returns a listener that reports addr and accepts what
// Deliver gives it.
func NewChanListener(addr net.Addr) *ChanListener {
	return &ChanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next delivered connection, or net.ErrClosed after
// Close.
func (l *ChanListener) Accept() (net.Conn, error) {
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

// Deliver passes c to the server; false means the listener is closed and
// the caller still owns c.
func (l *ChanListener) Deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// Close makes Accept and Deliver return; it is idempotent.
func (l *ChanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address given to NewChanListener.
func (l *ChanListener) Addr() net.Addr { return l.addr }

// Set tracks connections the http.Server does not: raw tunnels,
// hijacked upgrades and connections still in their handshake. Shutdown waits
// for them, then closes the rest.
type Set struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	idlers map[IdleCloser]struct{}
	closed bool
	// closing mirrors closed for lock-free checks per request.
	closing atomic.Bool
	wg      sync.WaitGroup
}

// IdleCloser is a tracked connection that serves requests one after the
// other (the HTTP/1.1 fast path): shutdown closes it while it waits
// between requests.
type IdleCloser interface{ CloseIfIdle() }

// AddIdler tracks c until RemoveIdler; Shutdown closes it when idle.
func (s *Set) AddIdler(c IdleCloser) {
	s.mu.Lock()
	if s.idlers == nil {
		s.idlers = make(map[IdleCloser]struct{})
	}
	s.idlers[c] = struct{}{}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		c.CloseIfIdle()
	}
}

// RemoveIdler stops tracking c.
func (s *Set) RemoveIdler(c IdleCloser) {
	s.mu.Lock()
	delete(s.idlers, c)
	s.mu.Unlock()
}

// IsClosed reports whether Shutdown began.
func (s *Set) IsClosed() bool { return s.closing.Load() }

// Add tracks c until Remove, or reports false: Shutdown began and c must
// not be served. Adding a tracked c again changes nothing.
func (s *Set) Add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[io.Closer]struct{})
	}
	if _, ok := s.conns[c]; ok {
		return true
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// Remove stops tracking c.
func (s *Set) Remove(c io.Closer) {
	s.mu.Lock()
	_, ok := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if ok {
		s.wg.Done()
	}
}

// Shutdown refuses new conns and waits for tracked ones to finish; when ctx
// ends first, it closes them and returns ctx's error.
func (s *Set) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.closing.Store(true)
	idle := make([]IdleCloser, 0, len(s.idlers))
	for c := range s.idlers {
		idle = append(idle, c)
	}
	s.mu.Unlock()
	for _, c := range idle {
		c.CloseIfIdle()
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

// AcceptLoop calls handle for each accepted conn. It returns when l is
// closed; other accept errors (out of file descriptors, aborted
// connections) are retried after 5ms doubling to 1s, without jitter, as
// net/http does: the wait is for this process's resources, not a peer
// many clients share.
func AcceptLoop(l net.Listener, handle func(net.Conn)) error {
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

func closeQuietly(c io.Closer) { _ = c.Close() }
