// Package upstream holds the data path's keep-alive HTTP/1.1 connections
// to upstreams (a peer proxy over mTLS, or the local app): the Pool the
// HTTP/1.1 fast path and the app client share, the watched reads that
// give up when the caller went away (without a goroutine per request),
// the liveness peek at idle sockets, and AppClient, the net/http
// RoundTripper that sends bodyless requests to the app over the pool.
//
// It must not depend on the data path's listeners and admission
// (internal/dataplane), the proxy role, the control plane, or the store
// (internal/deptest keeps this).
package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
)

// Buffer sizes per upstream connection: response heads larger than
// ReadBuf are parsed by net/http's reader; larger writes bypass WriteBuf.
const (
	ReadBuf  = 8 << 10
	WriteBuf = 4 << 10
)

// Conn is a pooled keep-alive HTTP/1.1 connection to a peer proxy or
// the app.
type Conn struct {
	C  net.Conn
	BR *bufio.Reader // reads through a watchedConn (see Watch)
	BW *bufio.Writer
	// wc is the reader under BR.
	wc        *watchedConn
	idleSince time.Time
	// uses counts the exchanges that ended cleanly on the connection.
	uses int
}

// Caller is the downstream side of an exchange, which a waiting read
// checks (Watch).
type Caller interface {
	// Gone reports whether the caller closed or reset its connection,
	// or a shutdown closed it.
	Gone() bool
}

// Watch starts an exchange for caller: until the connection is put back,
// a read that waits longer than watchInterval checks caller and gives up
// with relay.ErrClientGone when it is gone.
func (uc *Conn) Watch(caller Caller) { uc.wc.watch(caller, time.Time{}) }

// WatchUntil is Watch with a deadline: a read still waiting at until
// gives up with ErrTimeout (a TrafficPolicy's timeouts). A zero until is
// Watch.
func (uc *Conn) WatchUntil(caller Caller, until time.Time) { uc.wc.watch(caller, until) }

// ErrTimeout is a read cut off by WatchUntil's deadline.
var ErrTimeout = errors.New("upstream: response timed out")

// Pool keeps idle upstream connections, most recently used last.
type Pool struct {
	dial        func(ctx context.Context) (net.Conn, error)
	mu          sync.Mutex
	maxIdle     int
	idleTimeout time.Duration
	// maxUses closes a connection after that many exchanges; 0: never.
	maxUses int

	idle   []*Conn
	closed bool
}

// NewPool returns a pool that dials with dial and keeps at most maxIdle
// connections, each for at most idleTimeout.
func NewPool(dial func(ctx context.Context) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *Pool {
	return &Pool{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout}
}

// Configure changes the pool's bounds: at most maxIdle idle connections,
// each for at most idleTimeout, and (maxUses > 0) none used for more than
// maxUses exchanges. Safe to call while the pool is in use; idle
// connections over a new bound go at their next Get or Put.
func (p *Pool) Configure(maxIdle int, idleTimeout time.Duration, maxUses int) {
	p.mu.Lock()
	p.maxIdle, p.idleTimeout, p.maxUses = maxIdle, idleTimeout, maxUses
	p.mu.Unlock()
}

// Get returns an idle connection (reused) or dials one.
func (p *Pool) Get(ctx context.Context) (uc *Conn, reused bool, err error) {
	now := time.Now()
	for {
		p.mu.Lock()
		idleTimeout := p.idleTimeout
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		uc = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		idle := now.Sub(uc.idleSince)
		if idle < checkIdleAfter {
			return uc, true, nil
		}
		if idle < idleTimeout {
			// (The last exchange's watch deadline has passed by now;
			// connAlive peeks past it.)
			raw := uc.C
			if nc, ok := raw.(interface{ NetConn() net.Conn }); ok {
				raw = nc.NetConn() // the socket under TLS
			}
			if connAlive(raw) {
				return uc, true, nil
			}
		}
		closeQuietly(uc.C)
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	wc := &watchedConn{Conn: c}
	return &Conn{C: c, wc: wc, BR: bufio.NewReaderSize(wc, ReadBuf), BW: bufio.NewWriterSize(c, WriteBuf)}, false, nil
}

// Put returns a connection whose exchange ended cleanly; anything still
// buffered from it means a protocol error, and it is closed. The pool
// keeps connections in a clean state, whoever used them last: no caller
// watched and no read deadline, so the next user (the fast path or the
// net/http path's app client) starts from the same place.
func (p *Pool) Put(uc *Conn) {
	if uc.BR.Buffered() > 0 {
		closeQuietly(uc.C)
		return
	}
	if !uc.wc.disarm() {
		closeQuietly(uc.C)
		return
	}
	uc.idleSince = time.Now()
	uc.uses++
	p.mu.Lock()
	if !p.closed && len(p.idle) < p.maxIdle && (p.maxUses <= 0 || uc.uses < p.maxUses) {
		p.idle = append(p.idle, uc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	closeQuietly(uc.C)
}

// CloseIdle closes the idle connections; closing also refuses to keep
// any more (shutdown, or an endpoint no snapshot lists).
func (p *Pool) CloseIdle(closing bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if closing {
		p.closed = true
	}
	p.mu.Unlock()
	for _, uc := range idle {
		closeQuietly(uc.C)
	}
}

// watchedConn is the reader under an upstream connection's bufio.Reader.
// During an exchange the connection has a rolling read deadline: a read
// that waits longer than watchInterval checks the caller and gives up
// (relay.ErrClientGone) when the caller went away or a shutdown closed it, as a
// canceled request context does in net/http, without a goroutine per
// request. Only the exchange's goroutine reads, so caller needs no lock.
type watchedConn struct {
	net.Conn
	caller Caller
	// armed: a watch deadline is set (see watch).
	armed bool
	// until is the exchange's deadline, zero for none.
	until time.Time
}

// watch starts an exchange for caller: reads roll a deadline on and give
// up when caller is gone.
func (w *watchedConn) watch(caller Caller, until time.Time) {
	w.caller, w.armed, w.until = caller, true, until
	_ = w.Conn.SetReadDeadline(w.next(time.Now()))
}

// next is the read deadline of a wait starting at now.
func (w *watchedConn) next(now time.Time) time.Time {
	d := now.Add(watchInterval)
	if !w.until.IsZero() && w.until.Before(d) {
		return w.until
	}
	return d
}

// disarm ends the watch: no caller, no read deadline. False when the
// deadline cannot be cleared (the connection is broken).
func (w *watchedConn) disarm() bool {
	w.caller, w.until = nil, time.Time{}
	if !w.armed {
		return true
	}
	w.armed = false
	return w.Conn.SetReadDeadline(time.Time{}) == nil
}

// watchInterval is how often a waiting exchange checks its caller.
const watchInterval = 250 * time.Millisecond

func (w *watchedConn) Read(p []byte) (int, error) {
	for {
		n, err := w.Conn.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if c := w.caller; c == nil || c.Gone() {
			return 0, relay.ErrClientGone
		}
		now := time.Now()
		if !w.until.IsZero() && !now.Before(w.until) {
			return 0, ErrTimeout
		}
		_ = w.Conn.SetReadDeadline(w.next(now))
	}
}

func closeQuietly(c io.Closer) { _ = c.Close() }
