package dataplane

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
)

// upConn is a pooled keep-alive HTTP/1.1 connection to a peer proxy or
// the app.
type upConn struct {
	c net.Conn
	// wc is the reader under br (see watchedConn).
	wc        *watchedConn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// upPool keeps idle upstream connections, most recently used last.
type upPool struct {
	dial        func(ctx context.Context) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

func newUpPool(dial func(ctx context.Context) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *upPool {
	return &upPool{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout}
}

// get returns an idle connection (reused) or dials one.
func (p *upPool) get(ctx context.Context) (uc *upConn, reused bool, err error) {
	now := time.Now()
	for {
		p.mu.Lock()
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
		if idle < p.idleTimeout {
			// (The last exchange's watch deadline has passed by now;
			// connAlive peeks past it.)
			raw := uc.c
			if nc, ok := raw.(interface{ NetConn() net.Conn }); ok {
				raw = nc.NetConn() // the socket under TLS
			}
			if connAlive(raw) {
				return uc, true, nil
			}
		}
		closeQuietly(uc.c)
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	wc := &watchedConn{Conn: c}
	return &upConn{c: c, wc: wc, br: bufio.NewReaderSize(wc, upReadBuf), bw: bufio.NewWriterSize(c, upWriteBuf)}, false, nil
}

// put returns a connection whose exchange ended cleanly; anything still
// buffered from it means a protocol error, and it is closed. The pool
// keeps connections in a clean state, whoever used them last: no caller
// watched and no read deadline, so the next user (the fast path or the
// net/http path's app client) starts from the same place.
func (p *upPool) put(uc *upConn) {
	if uc.br.Buffered() > 0 {
		closeQuietly(uc.c)
		return
	}
	if !uc.wc.disarm() {
		closeQuietly(uc.c)
		return
	}
	uc.idleSince = time.Now()
	p.mu.Lock()
	if !p.closed && len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, uc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	closeQuietly(uc.c)
}

// closeIdle closes the idle connections; closing also refuses to keep
// any more (shutdown, or an endpoint no snapshot lists).
func (p *upPool) closeIdle(closing bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if closing {
		p.closed = true
	}
	p.mu.Unlock()
	for _, uc := range idle {
		closeQuietly(uc.c)
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
	caller *fastConn
	// armed: a watch deadline is set (see watch).
	armed bool
}

// watch starts an exchange for caller: reads roll a deadline on and give
// up when caller is gone.
func (w *watchedConn) watch(caller *fastConn) {
	w.caller, w.armed = caller, true
	_ = w.Conn.SetReadDeadline(time.Now().Add(watchInterval))
}

// disarm ends the watch: no caller, no read deadline. False when the
// deadline cannot be cleared (the connection is broken).
func (w *watchedConn) disarm() bool {
	w.caller = nil
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
		if fc := w.caller; fc == nil || fc.gone() {
			return 0, relay.ErrClientGone
		}
		_ = w.Conn.SetReadDeadline(time.Now().Add(watchInterval))
	}
}
