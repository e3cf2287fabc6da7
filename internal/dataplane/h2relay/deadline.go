package h2relay

import (
	"time"

	"golang.org/x/net/http2"
)

// setDeadline arms st's Request.Deadline: at that time the stream ends
// with the answer r (or a reset, once its response began).
func (c *Conn) setDeadline(st *stream, at time.Time, r *Response) {
	st.deadline = time.AfterFunc(time.Until(at), func() { c.expireDeadline(st, r) })
}

// expireDeadline ends a stream whose deadline passed: r to the caller
// when its response has not begun, else RST_STREAM(CANCEL); the upstream
// stream is reset with CANCEL. It runs on the timer's goroutine, beside
// the connections' readers, so it flushes what it writes itself.
func (c *Conn) expireDeadline(st *stream, r *Response) {
	d, u := &st.ends[sideDown], &st.ends[sideUp]
	st.mu.Lock()
	uc, finished := u.c, st.finished
	st.mu.Unlock()
	if finished {
		return
	}
	c.wmu.Lock()
	if d.reset || d.sentEnd {
		c.wmu.Unlock()
		return
	}
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		c.wmu.Unlock()
		return
	}
	began := d.headSent
	st.res.TimedOut = true
	if !began {
		st.res.Status = r.Status
	}
	st.mu.Unlock()
	d.pend, d.pendEnd, d.pendTrailers = nil, false, nil
	if began {
		d.reset = true
		c.writeRSTLocked(d.id, http2.ErrCodeCancel)
	} else {
		c.respondLocked(d, r)
	}
	c.flushLocked()
	c.wmu.Unlock()
	if uc != nil {
		uc.wmu.Lock()
		if !u.reset {
			u.reset = true
			u.pend, u.pendEnd, u.pendTrailers = nil, false, nil
			uc.writeRSTLocked(u.id, http2.ErrCodeCancel)
			uc.flushLocked()
		}
		uc.wmu.Unlock()
	}
	st.finish(began, false)
}
