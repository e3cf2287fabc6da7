package h2relay

import (
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Held streams (Request.Hold): the request is kept, head and body, until
// its END_STREAM, and only then goes upstream, so that a Retrier can send
// it again when the first response head says so. A unary gRPC call is
// one small message, so holding it costs little latency. A body past
// MaxHold goes on without retries (the stream window of 512 KiB always
// covers what is held, so the caller never waits for credit).

// held is a held stream's request.
type held struct {
	fields []hpack.HeaderField // the upstream head
	data   []byte
	up     *Conn // where the first try goes
	// opened: the request went upstream; complete: whole (END_STREAM
	// seen and within MaxHold), so it may be sent again.
	opened, complete bool
}

// hold starts holding st's request for up. The stream counts as routed
// (the body idle sweep watches it).
func (c *Conn) hold(st *stream, req *Request, up *Conn) {
	st.hold = &held{fields: requestFields(req, nil), up: up, complete: req.EndStream}
	st.mu.Lock()
	st.routed = true
	st.mu.Unlock()
	if !req.EndStream {
		return
	}
	st.hold.opened = true
	if _, ok := up.openHeld(c, st); !ok {
		c.answer(st, &Response{Status: 503, Body: "trellis: the upstream connection closed; retry\n"})
	}
}

// holdData takes a DATA frame of a held stream (downstream reader c).
func (c *Conn) holdData(st *stream, h *held, data []byte, end bool, padding int) {
	d := &st.ends[sideDown]
	h.data = append(h.data, data...)
	credit := padding
	if end || len(h.data) > MaxHold {
		h.opened, h.complete = true, end
		sent, ok := h.up.openHeld(c, st)
		if !ok {
			c.resetBoth(st, -1, http2.ErrCodeRefusedStream, false)
			return
		}
		if !end {
			credit += sent
		}
	}
	if credit > 0 {
		c.creditStream(d, credit)
		c.markDirty(c)
	}
}

// openHeld sends st's held request upstream on c: its head, its body so
// far, and END_STREAM when it is complete. rc is the running reader; sent
// is the body bytes that went out at once (the rest is queued).
func (c *Conn) openHeld(rc *Conn, st *stream) (sent int, ok bool) {
	h := st.hold
	if !c.openWith(st, h.fields, h.complete && len(h.data) == 0) {
		return 0, false
	}
	if len(h.data) > 0 {
		u := &st.ends[sideUp]
		c.wmu.Lock()
		sent, _ = u.sendDataLocked(h.data, h.complete)
		c.wmu.Unlock()
	}
	rc.markDirty(c)
	return sent, true
}

// retryHead offers the first final response head of a complete held
// stream to the Retrier (upstream reader c). True: the try was ended and
// the request sent again elsewhere; the head is dropped.
func (c *Conn) retryHead(st *stream, f *head) bool {
	r, ok := st.h.(Retrier)
	if !ok {
		return false
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 200 {
		return false
	}
	g := -1
	if f.StreamEnded() {
		g = grpcStatus(f.Fields)
	}
	st.mu.Lock()
	tag, finished := st.res.Tag, st.finished
	st.mu.Unlock()
	if finished {
		return false
	}
	next := r.Retry(tag, code, g)
	if next == nil {
		return false
	}
	// End this try: reset it (unless it is over on both sides) and take
	// the stream off this connection.
	u := &st.ends[sideUp]
	id := u.id
	c.wmu.Lock()
	if !u.reset && !(u.sentEnd && f.StreamEnded()) {
		c.writeRSTLocked(u.id, http2.ErrCodeCancel)
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
	*u = end{}
	c.wmu.Unlock()
	c.markDirty(c)
	c.smu.Lock()
	if c.streams[id] == st {
		delete(c.streams, id)
		c.active--
	}
	c.smu.Unlock()
	c.touch()
	if _, ok := next.openHeld(c, st); !ok {
		c.upstreamLost(st)
	}
	return true
}
