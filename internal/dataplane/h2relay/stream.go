package h2relay

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one relayed exchange: its end on the downstream connection
// and its end on the upstream one.
type stream struct {
	ends [2]end
	h    Handler
	res  Result

	// mu guards the fields below, and res once the stream is routed:
	// res is frozen when finished is set (writers check it), so Done
	// reads it without the lock.
	mu       sync.Mutex
	finished bool
	local    bool // answered by the proxy: no upstream end
	// routed: the stream went upstream (its upstream end is set).
	routed bool

	// hold is the request kept for another try (Request.Hold), nil
	// otherwise; the downstream reader fills it, and once complete only
	// the reader of the upstream connection in use touches it.
	hold *held
	// copying: the request body is copied for the Copier (Request.Copy)
	// into copy; the downstream reader alone touches both.
	copying bool
	copy    []byte
	// deadline ends the stream at Request.Deadline (deadline.go).
	deadline *time.Timer

	// bodyMoves counts the DATA frames with bytes the caller sent; the
	// body sweep (watchBodies) alone reads it and keeps seenMoves and
	// seenAt, when it last saw the count change.
	bodyMoves atomic.Uint32
	seenMoves uint32
	seenAt    int64 // unix nanoseconds
}

// end is a stream's presence on one connection.
type end struct {
	st *stream
	c  *Conn
	id uint32
	// recvWin is the window granted to the peer for this stream, left
	// (reader and crediting goroutines).
	recvWin atomic.Int32

	// Under c.wmu: what is sent to this end.
	sendWin      int64
	pend         []byte
	pendEnd      bool
	pendTrailers []hpack.HeaderField
	queued       bool // in c.blocked
	sentEnd      bool // END_STREAM went out to this end
	reset        bool // a RST_STREAM went out or came in
	credit       int32
	// recvEnded: this end sent END_STREAM (reader of c).
	recvEnded atomic.Bool
	// gotHeaders: the response head came (upstream end; reader of c).
	gotHeaders bool
	// headSent: a final response head went out to this end (downstream
	// end; under c.wmu).
	headSent bool
}

// clear takes the end off its connection, for another try (c.wmu and
// e.st.mu are held).
func (e *end) clear() {
	e.c, e.id = nil, 0
	e.recvWin.Store(0)
	e.sendWin, e.pend, e.pendEnd, e.pendTrailers = 0, nil, false, nil
	e.queued, e.sentEnd, e.reset, e.credit = false, false, false, 0
	e.recvEnded.Store(false)
	e.gotHeaders, e.headSent = false, false
}

// conn is the end's connection and stream id: they change when a held
// stream is tried again, under st.mu (which this takes).
func (st *stream) conn(i int) (*Conn, uint32) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ends[i].c, st.ends[i].id
}

// other is the far end.
func (e *end) other() *end { return &e.st.ends[1-e.c.side] }

// sendDataLocked sends as much of data as the windows allow to e and
// queues the rest (with the end of stream). It returns the bytes sent and
// whether END_STREAM went out. c.wmu is held.
func (e *end) sendDataLocked(data []byte, endStream bool) (sent int, ended bool) {
	c := e.c
	if e.reset || e.sentEnd || c.wdead {
		return len(data), false
	}
	if len(e.pend) == 0 && !e.pendEnd {
		n := c.sendableLocked(e, len(data))
		for n > 0 || (endStream && len(data) == 0) {
			chunk := min(n, int(c.peerMaxFrame))
			last := endStream && chunk == len(data)
			if err := c.fr.WriteData(e.id, last, data[:chunk]); err != nil {
				c.writeFailedLocked()
				return len(data) + sent, false
			}
			c.sendWin -= int64(chunk)
			e.sendWin -= int64(chunk)
			data = data[chunk:]
			sent += chunk
			n -= chunk
			if last {
				e.sentEnd = true
				return sent, true
			}
		}
	}
	if len(data) > 0 || endStream {
		e.pend = append(e.pend, data...)
		e.pendEnd = e.pendEnd || endStream
		if !e.queued {
			e.queued = true
			c.blocked = append(c.blocked, e)
		}
	}
	return sent, false
}

// sendableLocked is how many bytes e may be sent now.
func (c *Conn) sendableLocked(e *end, want int) int {
	n := int64(want)
	n = min(n, e.sendWin, c.sendWin)
	return int(max(n, 0))
}

// drainLocked sends queued data the windows now allow. It returns the
// ends whose source must be credited (with the bytes) and those that
// ended.
func (c *Conn) drainLocked(moved []movedData) []movedData {
	kept := c.blocked[:0]
	for _, e := range c.blocked {
		if e.reset || c.wdead {
			e.queued, e.pend, e.pendTrailers = false, nil, nil
			continue
		}
		data, endStream, trailers := e.pend, e.pendEnd, e.pendTrailers
		e.pend, e.pendEnd, e.pendTrailers, e.queued = nil, false, nil, false
		dataEnd := endStream && trailers == nil
		sent, ended := e.sendDataLocked(data, dataEnd)
		if trailers != nil {
			if e.queued {
				e.pendTrailers, e.pendEnd = trailers, true
			} else {
				c.writeHeadersLocked(e.id, trailers, true)
				e.sentEnd, ended = true, true
			}
		}
		if e.queued {
			kept = append(kept, e)
		}
		if sent > 0 || ended {
			moved = append(moved, movedData{e: e, n: sent, ended: ended})
		}
	}
	clear(c.blocked[len(kept):])
	c.blocked = kept
	return moved
}

// movedData is queued data that went out to e.
type movedData struct {
	e     *end
	n     int
	ended bool
}

// afterMoved returns the stream windows of the sources of moved data and finishes ended
// streams; no lock held. rc is the running reader.
func (rc *Conn) afterMoved(moved []movedData) {
	for _, m := range moved {
		src := m.e.other()
		if m.n > 0 {
			src.c.creditStream(src, m.n)
			rc.markDirty(src.c)
		}
		if m.ended {
			m.e.st.sentEnd()
		}
	}
}

// deferredCredit is a stream window held back while the data sits in a
// spill.
type deferredCredit struct {
	e *end
	n int
}

// releaseDeferred returns the stream windows held back for a spilled
// connection, once it drained (called by the Spill's goroutine).
func (c *Conn) releaseDeferred() {
	c.wmu.Lock()
	list := c.deferred
	c.deferred = nil
	c.wmu.Unlock()
	for _, d := range list {
		src := d.e.c
		src.creditStream(d.e, d.n)
		src.wmu.Lock()
		src.flushLocked()
		src.wmu.Unlock()
	}
}

// creditStream returns n bytes of e's stream window, once a quarter of
// the window has gathered; it is returned as the data leaves on the other
// side, so a slow consumer holds at most one window of the stream.
func (c *Conn) creditStream(e *end, n int) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdead || e.recvEnded.Load() || e.reset {
		return
	}
	e.credit += int32(n)
	if e.credit >= c.cfg.StreamWindow/4 {
		c.checkLocked(c.fr.WriteWindowUpdate(e.id, uint32(e.credit)))
		e.recvWin.Add(e.credit)
		e.credit = 0
	}
}

// creditConn returns n bytes of connection window to the peer, once a
// quarter of the window has gathered (so small messages do not each cost
// a WINDOW_UPDATE). The connection window is returned as soon as data is
// read, whether it could be forwarded or waits: a stream whose consumer
// is slow holds its own window, never the window other streams of the
// connection share.
func (c *Conn) creditConn(n int) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdead {
		return
	}
	c.connCredit += int32(n)
	if c.connCredit >= c.cfg.ConnWindow/4 {
		c.checkLocked(c.fr.WriteWindowUpdate(0, uint32(c.connCredit)))
		c.recvConnWin.Add(int64(c.connCredit))
		c.connCredit = 0
	}
}

// sentEnd notes an END_STREAM sent on one end: the stream is done when
// both ends have had theirs.
func (st *stream) sentEnd() {
	down, up := &st.ends[sideDown], &st.ends[sideUp]
	down.c.wmu.Lock()
	d := down.sentEnd || down.reset
	down.c.wmu.Unlock()
	u := true
	if uc, _ := st.conn(sideUp); !st.local && uc != nil {
		uc.wmu.Lock()
		u = up.sentEnd || up.reset
		uc.wmu.Unlock()
	}
	if d && u {
		st.finish(false, false)
	}
}

// finish removes the stream from its connections and reports it, once.
func (st *stream) finish(reset, byCaller bool) {
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		return
	}
	st.finished = true
	st.res.Reset, st.res.ResetByCaller = reset, byCaller
	var conns [2]*Conn
	var ids [2]uint32
	for i := range st.ends {
		conns[i], ids[i] = st.ends[i].c, st.ends[i].id
	}
	st.mu.Unlock()
	if st.deadline != nil {
		st.deadline.Stop()
	}
	if h := st.hold; h != nil {
		h.mu.Lock()
		if h.timer != nil {
			h.timer.Stop()
		}
		h.mu.Unlock()
	}
	for i, c := range conns {
		if c == nil {
			continue
		}
		c.smu.Lock()
		if c.streams[ids[i]] == st {
			delete(c.streams, ids[i])
			c.active--
		}
		c.smu.Unlock()
		c.touch()
	}
	if st.h != nil {
		st.h.Done(&st.res)
	}
	for _, c := range conns {
		if c != nil {
			c.closeIfDrained()
		}
	}
}

// resetBoth resets the stream on both connections with code (the end
// that was reset by its peer is skipped) and finishes it. rc is the
// running reader.
func (rc *Conn) resetBoth(st *stream, from int, code http2.ErrCode, byCaller bool) {
	for i := range st.ends {
		e := &st.ends[i]
		ec, _ := st.conn(i)
		if ec == nil {
			continue
		}
		ec.wmu.Lock()
		if now, _ := st.conn(i); now == ec && !e.reset {
			// (A retry may have moved the end meanwhile: it is then
			// reset where it went, or not opened once finished.)
			e.reset = true
			e.pend, e.pendTrailers = nil, nil
			if i != from && !(e.sentEnd && e.recvEnded.Load()) {
				ec.writeRSTLocked(e.id, code)
				rc.markDirty(ec)
			}
		}
		ec.wmu.Unlock()
	}
	st.finish(true, byCaller)
}

// newStream is a stream opened by the downstream peer.
func newStream(down *Conn, id uint32, h Handler) *stream {
	st := &stream{h: h}
	st.res.GRPCStatus = -1
	st.res.Start = time.Now()
	st.seenAt = st.res.Start.UnixNano()
	d := &st.ends[sideDown]
	d.st, d.c, d.id = st, down, id
	d.recvWin.Store(down.cfg.StreamWindow)
	down.wmu.Lock()
	d.sendWin = int64(down.peerInitWin)
	down.wmu.Unlock()
	return st
}
