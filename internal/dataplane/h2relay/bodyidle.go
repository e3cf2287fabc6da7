package h2relay

import (
	"time"

	"golang.org/x/net/http2"
)

// The body idle sweep: a caller that opens a stream, sends part of its
// request body and stops would hold an upstream stream (and whatever the
// Handler admitted it with) for as long as it likes. A timer per
// downstream connection looks at its streams every quarter of
// BodyIdleTimeout and ends those whose caller has sent no DATA for the
// whole timeout while their response has not begun: the same rule, and
// the same 408, as the HTTP/1.1 paths' --body-idle-timeout.

// watchBodies starts the sweep on a downstream connection with a
// BodyIdleTimeout.
func (c *Conn) watchBodies() {
	d := c.cfg.BodyIdleTimeout
	if d <= 0 || c.side != sideDown {
		return
	}
	tick := max(d/4, 10*time.Millisecond)
	t := time.AfterFunc(time.Hour, func() {
		if c.closed.Load() {
			return
		}
		c.sweepBodies(time.Now(), d)
		c.bodies.Reset(tick)
	})
	t.Stop()
	c.bodies = t
	t.Reset(tick)
}

// sweepBodies ends the streams whose request body has not moved for d.
// Only the sweep's timer calls it, so seenMoves and seenAt are its own.
func (c *Conn) sweepBodies(now time.Time, d time.Duration) {
	var stale []*stream
	c.smu.Lock()
	for _, st := range c.streams {
		if st.ends[sideDown].recvEnded.Load() {
			continue
		}
		if n := st.bodyMoves.Load(); n != st.seenMoves {
			st.seenMoves, st.seenAt = n, now.UnixNano()
			continue
		}
		if now.UnixNano()-st.seenAt >= int64(d) {
			stale = append(stale, st)
		}
	}
	c.smu.Unlock()
	for _, st := range stale {
		c.expireBody(st)
	}
}

// expireBody answers a stalled stream with 408 and resets its upstream
// end, unless its response began or it ended meanwhile. It runs beside
// the connection's reader, so it flushes what it writes itself.
func (c *Conn) expireBody(st *stream) {
	d, u := &st.ends[sideDown], &st.ends[sideUp]
	st.mu.Lock()
	routed, uc := st.routed, u.c
	st.mu.Unlock()
	if !routed {
		return // answered by the proxy, or still being routed
	}
	c.wmu.Lock()
	if d.headSent || d.reset || d.sentEnd || d.recvEnded.Load() {
		c.wmu.Unlock()
		return
	}
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		c.wmu.Unlock()
		return
	}
	st.res.Status = 408
	st.res.BodyIdle = true
	st.mu.Unlock()
	d.pend, d.pendEnd, d.pendTrailers = nil, false, nil
	c.respondLocked(d, &Response{Status: 408, Body: c.cfg.BodyIdleMessage})
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
	st.finish(false, false)
}
