package dataplane

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/dataplane/upstream"
	"github.com/trellismesh/trellis/internal/h1"
)

// The HTTP/1.1 fast path. Plain HTTP/1.1 requests (most service traffic)
// are read, authorized and forwarded by internal/h1 in the connection's
// own goroutine: one buffered write per request and per response on each
// hop, no goroutine handoffs, pooled keep-alive connections to the peer
// proxy (ALPN http/1.1 over mTLS) and to the app. A connection whose next
// request the fast path does not take (HTTP/2, Upgrade, Expect, trailers,
// odd framing, a target that needs normalizing...) is handed, with the
// bytes already buffered, to the side's net/http server, which serves the
// rest of it. Both paths apply the same checks and policies.

// Buffer sizes, per connection: a request head must fit fastReadBuf to
// take the fast path (larger ones go to net/http); response heads larger
// than upstream.ReadBuf are parsed by net/http's reader. Larger writes bypass the
// write buffers.
const (
	fastReadBuf  = 8 << 10
	fastWriteBuf = 4 << 10
	// inlineBody: a request body this small that already arrived is
	// written with the head; larger ones stream from a goroutine while
	// the response is read, so neither side can block the other.
	inlineBody = 8 << 10
)

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastReadBuf) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, fastWriteBuf) }}
	fastHeads   = sync.Pool{New: func() any { return &h1.Head{Fields: make([]h1.Field, 0, 16)} }}
)

// fastServer is one side's fast path: handle serves a parsed request and
// says whether the connection may carry another; handoff gives a
// connection to the net/http server.
type fastServer struct {
	// accept, when set, may leave a parsed request to net/http.
	accept      func(req *h1.Head) bool
	handle      func(fc *fastConn, req *h1.Head) (keepAlive bool)
	handoff     func(c net.Conn, p *peer) bool
	idleTimeout time.Duration
	// bodyIdle, when set, ends a request body that makes no progress for
	// this long (limits.Limits.BodyIdleTimeout; inbound only).
	bodyIdle time.Duration
	// refusals counts heads refused here (inbound only; nil counts
	// nothing).
	refusals *metrics.Metrics
	conns    *connset.Set
}

// fastConn is a downstream connection on the fast path.
type fastConn struct {
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	state atomic.Int32
	peer  *peer // inbound only
	isTLS bool
	srv   *fastServer
	// streaming: a request body is being read from c by another
	// goroutine, so data on the socket says nothing about the caller.
	streaming atomic.Bool
	// bodyOpen: that goroutine has not finished the body yet.
	bodyOpen atomic.Bool
	// bodyIdle is set while a request body is read: every read from c
	// then waits at most this long (see Read).
	bodyIdle time.Duration
	// view and verdict are the current request as the inbound admission
	// chain sees it and its verdict (one per connection: no allocation
	// per request).
	view    admission.H1View
	verdict admission.Verdict
}

// Read reads from the caller's connection; br reads through it. While a
// request body is read, each read gets a deadline of bodyIdle: a body
// that stops making progress ends the exchange (a body that trickles on
// is bounded by the app gate instead).
func (fc *fastConn) Read(p []byte) (int, error) {
	if d := fc.bodyIdle; d > 0 {
		_ = fc.c.SetReadDeadline(time.Now().Add(d))
	}
	return fc.c.Read(p)
}

// closing: the connection closes after the current response (shutdown).
func (fc *fastConn) closing() bool { return fc.srv.conns.IsClosed() }

// Gone reports whether the caller closed or reset the connection, or a
// shutdown closed it. An encrypted alert is recognized by its size only
// while no body streams (a 2-byte body piece has the same size).
func (fc *fastConn) Gone() bool {
	return upstream.PeerGone(fc.c, fc.isTLS && !fc.streaming.Load())
}

const (
	connActive int32 = iota
	connIdle
	connClosed
)

// CloseIfIdle closes the connection when it waits between requests
// (shutdown); an active one closes after its response.
func (fc *fastConn) CloseIfIdle() {
	if fc.state.CompareAndSwap(connIdle, connClosed) {
		closeQuietly(fc.c)
	}
}

// serve runs the fast path on c until the connection ends or is handed
// off. The caller tracks c in s.conns.
func (s *fastServer) serve(c net.Conn, p *peer) {
	fc := &fastConn{c: c, peer: p, srv: s}
	_, fc.isTLS = c.(*tls.Conn)
	fc.state.Store(connIdle)
	fc.br = fastReaders.Get().(*bufio.Reader)
	fc.br.Reset(fc)
	fc.bw = fastWriters.Get().(*bufio.Writer)
	fc.bw.Reset(c)
	req := fastHeads.Get().(*h1.Head)
	s.conns.AddIdler(fc)
	handedOff := false
	defer func() {
		s.conns.RemoveIdler(fc)
		fastHeads.Put(req)
		fc.bw.Reset(nil)
		fastWriters.Put(fc.bw)
		if !handedOff {
			closeQuietly(c)
			fc.br.Reset(nil)
			fastReaders.Put(fc.br)
		}
	}()
	for {
		if s.idleTimeout > 0 {
			_ = c.SetReadDeadline(time.Now().Add(s.idleTimeout))
		}
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		if !fc.state.CompareAndSwap(connIdle, connActive) {
			return // closed by shutdown
		}
		// Deadlines cost timer work: a head that arrived whole keeps the
		// idle deadline; one that trickles in gets readHeaderTimeout.
		if !h1.HeadBuffered(fc.br) {
			_ = c.SetReadDeadline(time.Now().Add(readHeaderTimeout))
		}
		n, err := h1.ParseRequest(fc.br, req)
		if err == nil && s.accept != nil && !s.accept(req) {
			err = h1.ErrUnsupported
		}
		if err != nil {
			switch {
			case errors.Is(err, h1.ErrUnsupported):
				_ = c.SetReadDeadline(time.Time{})
				handedOff = s.handoff(&replayConn{Conn: c, r: fc.br}, p)
			case errors.Is(err, h1.ErrBareLF):
				// Answered at once: the CRLF CRLF it lacks never comes.
				s.refusals.RefusedRequest(admission.ReasonBadRequest)
				ew := newErrorResponse()
				relay.PlainError(ew, http.StatusBadRequest, "trellis: bare LF line ending in the request head; end lines with CRLF\n")
				ew.writeTo(fc.bw, true)
				_ = fc.bw.Flush()
			}
			return
		}
		_, _ = fc.br.Discard(n)
		if req.RequestBody() != h1.BodyNone {
			// Bodies stream at their own pace, within bodyIdle per read;
			// without one, nothing reads c again before the next idle
			// deadline is set (upstream.PeerGone peeks at the socket, past
			// deadlines).
			_ = c.SetReadDeadline(time.Time{})
			fc.bodyIdle = s.bodyIdle
		}
		keep := s.handle(fc, req)
		fc.bodyIdle = 0
		// Handlers leave the end of their response buffered, so that
		// it goes out after their bookkeeping.
		if err := fc.bw.Flush(); err != nil || !keep || req.Close || s.conns.IsClosed() {
			return
		}
		if !fc.state.CompareAndSwap(connActive, connIdle) {
			return
		}
	}
}

// readHeaderTimeout matches the net/http servers' ReadHeaderTimeout.
const readHeaderTimeout = 30 * time.Second

// replayConn is a connection handed to net/http with the bytes the fast
// path already buffered.
type replayConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn exposes the socket for half-closing.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// errorResponse is an http.ResponseWriter for answers the proxy makes up
// itself (refusals, failures), so the fast path shares them with the
// net/http path.
type errorResponse struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func newErrorResponse() *errorResponse { return &errorResponse{h: make(http.Header)} }

func (e *errorResponse) Header() http.Header { return e.h }

func (e *errorResponse) WriteHeader(code int) {
	if e.code == 0 {
		e.code = code
	}
}

func (e *errorResponse) Write(b []byte) (int, error) {
	if e.code == 0 {
		e.code = http.StatusOK
	}
	return e.body.Write(b)
}

// writeTo writes the response into w with a Content-Length, leaving the
// flush to the caller; close adds "Connection: close".
func (e *errorResponse) writeTo(w *bufio.Writer, close bool) {
	if e.code == 0 {
		e.code = http.StatusOK
	}
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(e.code))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(e.code))
	w.WriteString("\r\n")
	for k, vv := range e.h {
		for _, v := range vv {
			if !h1.ValidField(h1.Field{Name: k, Value: v}) {
				continue
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(e.body.Len()))
	w.WriteString("\r\n\r\n")
	w.Write(e.body.Bytes())
}

// answer writes a response the proxy made up to req and says whether the
// connection can carry another request: not when forceClose, when the
// caller asked to close, or when req's body cannot be skipped.
func (fc *fastConn) answer(req *h1.Head, ew *errorResponse, forceClose bool) bool {
	keep := !forceClose && !req.Close && discardBody(fc, req)
	ew.writeTo(fc.bw, !keep)
	return keep
}

// discardBody reads a request body the proxy answered without forwarding,
// so the connection can carry the next request; false means it could not
// (too large or broken) and the connection must close.
func discardBody(fc *fastConn, req *h1.Head) bool {
	switch req.RequestBody() {
	case h1.BodyNone:
		return true
	case h1.BodyLength:
		if req.ContentLength > 64<<10 {
			return false
		}
		_ = fc.c.SetReadDeadline(time.Now().Add(discardTimeout))
		_, err := fc.br.Discard(int(req.ContentLength))
		_ = fc.c.SetReadDeadline(time.Time{})
		return err == nil
	}
	return false
}

// discardTimeout bounds the wait for the rest of a refused request's body.
const discardTimeout = 5 * time.Second
