package h2relay

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Held streams: the request is kept, head and body, before it goes
// upstream, for two reasons.
//
//   - Request.Hold (retries): until its END_STREAM, so that a Retrier can
//     send it again when the first response head, or a reset, says so. A
//     unary gRPC call is one small message, so holding it costs little
//     latency. A body past MaxHold, or trailers, send it on without
//     retries.
//   - Request.Delay (a Route's fault delay): until the delay has passed;
//     what the caller sent meanwhile then goes on at once, and the rest of
//     the stream is relayed as usual. The stream's window bounds what
//     waits in the proxy.
//
// The downstream reader fills a held request and a delay's timer may
// open it, so the fields below its mu are guarded; once opened only the
// reader of the upstream connection in use reads it (for a retry).

// held is a held stream's request.
type held struct {
	mu     sync.Mutex
	fields []hpack.HeaderField // the upstream head
	data   []byte
	// trailers end the request (a copy); it is then not retried.
	trailers []hpack.HeaderField
	up       *Conn // where the first try goes
	// retry: hold until END_STREAM (Request.Hold); waiting: a delay has
	// not passed yet, timer is its timer.
	retry, waiting bool
	timer          *time.Timer
	// opened: the request went upstream; ended: the caller ended it;
	// complete: whole (END_STREAM seen, without trailers and within
	// MaxHold) before it went upstream, so it may be sent again.
	opened, ended, complete bool
}

// ready says the request may go upstream now. h.mu is held.
func (h *held) ready() bool {
	return !h.waiting && (h.ended || !h.retry || len(h.data) > MaxHold)
}

// hold starts holding st's request for up (on the downstream reader c).
// The stream counts as routed (the body idle sweep watches it).
func (c *Conn) hold(st *stream, req *Request, up *Conn, retry bool) {
	h := &held{fields: requestFields(req, nil), up: up, retry: retry, ended: req.EndStream, complete: req.EndStream}
	st.hold = h
	st.mu.Lock()
	st.routed = true
	st.mu.Unlock()
	h.mu.Lock()
	if req.Delay > 0 {
		h.waiting = true
		h.timer = time.AfterFunc(req.Delay, func() { c.delayPassed(st) })
	}
	if !h.ready() {
		h.mu.Unlock()
		return
	}
	h.opened = true
	_, ok := up.openHeld(st)
	h.mu.Unlock()
	c.markDirty(up)
	if !ok {
		c.answer(st, &Response{Status: 503, Body: "trellis: the upstream connection closed; retry\n"})
	}
}

// holdData takes a DATA frame of a held stream (downstream reader c); false
// when the request went upstream already and the frame is to be relayed.
func (c *Conn) holdData(st *stream, h *held, data []byte, end bool, padding int) bool {
	h.mu.Lock()
	if h.opened {
		h.mu.Unlock()
		return false
	}
	h.data = append(h.data, data...)
	h.ended = end
	h.complete = end && len(h.data) <= MaxHold
	credit := padding
	opened, sent := c.openIfReady(st, h)
	if sent < 0 {
		return true
	}
	if opened && !end {
		credit += sent
	}
	if credit > 0 {
		c.creditStream(&st.ends[sideDown], credit)
		c.markDirty(c)
	}
	return true
}

// holdTrailers takes the request trailers of a held stream (downstream
// reader c); false when the request went upstream already.
func (c *Conn) holdTrailers(st *stream, h *held, fields []hpack.HeaderField) bool {
	h.mu.Lock()
	if h.opened {
		h.mu.Unlock()
		return false
	}
	h.trailers = slices.Clone(fields)
	h.ended, h.complete = true, false
	c.openIfReady(st, h)
	return true
}

// openIfReady sends a held request upstream when it is ready (downstream
// reader c; h.mu is held, and released here). sent is the body bytes
// that went out at once, -1 when the upstream connection no longer took
// streams (the stream was then reset with REFUSED_STREAM: the caller may
// send it again).
func (c *Conn) openIfReady(st *stream, h *held) (opened bool, sent int) {
	if !h.ready() {
		h.mu.Unlock()
		return false, 0
	}
	h.opened = true
	sent, ok := h.up.openHeld(st)
	h.mu.Unlock()
	c.markDirty(h.up)
	if !ok {
		c.resetBoth(st, -1, http2.ErrCodeRefusedStream, false)
		return true, -1
	}
	return true, sent
}

// delayPassed opens a delayed stream's request when it is ready (the
// delay's timer, beside the readers: it flushes what it writes itself).
// c is the downstream connection.
func (c *Conn) delayPassed(st *stream) {
	h := st.hold
	h.mu.Lock()
	h.waiting = false
	st.mu.Lock()
	finished := st.finished
	st.mu.Unlock()
	if h.opened || finished || !h.ready() {
		h.mu.Unlock()
		return
	}
	h.opened = true
	sent, ok := h.up.openHeld(st)
	h.mu.Unlock()
	up := h.up
	up.wmu.Lock()
	up.flushLocked()
	up.wmu.Unlock()
	d := &st.ends[sideDown]
	if !ok {
		// Nothing went upstream: the caller may send it again.
		c.wmu.Lock()
		if !d.reset && !d.sentEnd {
			d.reset = true
			c.writeRSTLocked(d.id, http2.ErrCodeRefusedStream)
			c.flushLocked()
		}
		c.wmu.Unlock()
		st.finish(true, false)
		return
	}
	if sent > 0 && !d.recvEnded.Load() {
		c.creditStream(d, sent)
		c.wmu.Lock()
		c.flushLocked()
		c.wmu.Unlock()
	}
}

// openHeld sends st's held request upstream on c: its head, its body so
// far, and its end when it came (END_STREAM or trailers). sent is the body
// bytes that went out at once (the rest is queued). The caller flushes c.
func (c *Conn) openHeld(st *stream) (sent int, ok bool) {
	h := st.hold
	ended := h.ended && h.trailers == nil
	if !c.openWith(st, h.fields, ended && len(h.data) == 0) {
		return 0, false
	}
	u := &st.ends[sideUp]
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(h.data) > 0 {
		sent, _ = u.sendDataLocked(h.data, ended)
	}
	if h.trailers != nil && !u.reset && !c.wdead {
		if len(u.pend) > 0 || u.queued {
			u.pendTrailers, u.pendEnd = h.trailers, true
		} else {
			c.writeHeadersLocked(u.id, h.trailers, true)
			u.sentEnd = true
		}
	}
	return sent, true
}

// retryHead offers the first final response head of a complete held
// stream to the Retrier (upstream reader c). True: the try was ended and
// the request sent again elsewhere; the head is dropped.
func (c *Conn) retryHead(st *stream, f *head) bool {
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 200 {
		return false
	}
	g := -1
	if f.StreamEnded() {
		g = grpcStatus(f.Fields)
	}
	return c.retryTry(st, code, g, f.StreamEnded())
}

// retryReset offers a complete held stream whose try was reset, or whose
// upstream connection broke, before its response began to the Retrier
// (status 0). True: it went again elsewhere.
func (c *Conn) retryReset(st *stream) bool { return c.retryTry(st, 0, -1, false) }

// retryTry asks the Retrier about a try of st on c that ended with status
// (0: reset) and grpcStatus; upEnded says the upstream ended the stream.
// True: the try was ended and the request sent again elsewhere.
func (c *Conn) retryTry(st *stream, status, grpcStatus int, upEnded bool) bool {
	r, ok := st.h.(Retrier)
	if !ok {
		return false
	}
	st.mu.Lock()
	tag, finished := st.res.Tag, st.finished
	st.mu.Unlock()
	if finished {
		return false
	}
	next := r.Retry(tag, status, grpcStatus)
	if next == nil {
		return false
	}
	// End this try: reset it (unless it is over on both sides or was
	// reset) and take the stream off this connection.
	u := &st.ends[sideUp]
	c.wmu.Lock()
	id := u.id
	if !u.reset && !(u.sentEnd && upEnded) {
		c.writeRSTLocked(id, http2.ErrCodeCancel)
	}
	if u.queued {
		kept := c.blocked[:0]
		for _, e := range c.blocked {
			if e != u {
				kept = append(kept, e)
			}
		}
		clear(c.blocked[len(kept):])
		c.blocked = kept
	}
	st.mu.Lock()
	u.clear()
	st.mu.Unlock()
	c.wmu.Unlock()
	c.markDirty(c)
	c.smu.Lock()
	if c.streams[id] == st {
		delete(c.streams, id)
		c.active--
	}
	c.smu.Unlock()
	c.touch()
	_, ok = next.openHeld(st)
	c.markDirty(next)
	if !ok {
		c.upstreamLost(st)
	}
	return true
}

// copyData copies a DATA frame of a copied request (Request.Copy;
// downstream reader c).
func (c *Conn) copyData(st *stream, data []byte, end bool) {
	if len(st.copy)+len(data) > MaxHold {
		c.copyEnd(st, false)
		return
	}
	st.copy = append(st.copy, data...)
	if end {
		c.copyEnd(st, true)
	}
}

// copyEnd hands a copied request to the Copier and stops copying.
func (c *Conn) copyEnd(st *stream, ok bool) {
	body := st.copy
	if !ok {
		body = nil
	}
	st.copying, st.copy = false, nil
	if cp, isCopier := st.res.Tag.(Copier); isCopier {
		cp.Copied(body, ok)
	}
}

// mayRetry says whether st's try on c (upstream reader) may still be
// sent again: its request was held whole and no response head came.
func (c *Conn) mayRetry(st *stream) bool {
	h := st.hold
	return h != nil && h.complete && !st.ends[sideUp].gotHeaders
}
