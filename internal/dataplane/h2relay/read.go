package h2relay

import (
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// NewServerConn prepares a downstream connection whose next bytes are
// the HTTP/2 client preface; Run serves it. nc may replay bytes already
// read. Writes go to w, or to nc when w is nil; w is an enabled Spill (or
// nc writes into one, under TLS) when the caller is untrusted: see Spill.
func NewServerConn(nc net.Conn, w io.Writer, cfg *Config, h Handler) *Conn {
	c := newConn(nc, w, cfg, sideDown)
	c.h = h
	return c
}

// UseSpill tells the connection that its writes wait in sp: while sp
// holds bytes, the stream windows of the data sent here are returned to
// its sources only once sp has drained, so a caller that does not read
// holds its streams' windows, not more.
func (c *Conn) UseSpill(sp *Spill) {
	c.spill = sp
	sp.OnDrained(c.releaseDeferred)
}

// Run relays the connection's streams until it ends, and closes it.
func (c *Conn) Run() error { return c.serve() }

// connErr ends the connection with a GOAWAY carrying code.
type connErr struct {
	code http2.ErrCode
	msg  string
}

func (e *connErr) Error() string { return "h2relay: " + e.code.String() + ": " + e.msg }

func (c *Conn) serve() (err error) {
	defer c.teardown()
	if c.side == sideDown {
		if err := readPreface(c.br); err != nil {
			return err
		}
		if err := c.start(); err != nil {
			return err
		}
	}
	c.watchIdle()
	c.watchBodies()
	for {
		if c.br.Buffered() == 0 {
			c.flushDirty()
		}
		f, err := c.fr.ReadFrame()
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			f, err = c.readHead(hf)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.streamError(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.Is(err, http2.ErrFrameTooLarge) {
				ce = http2.ConnectionError(http2.ErrCodeFrameSize)
				err = ce
			}
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce), "")
				c.flushDirty()
				c.lingerAfterGoAway()
			}
			c.flushDirty()
			return err
		}
		if err := c.handle(f); err != nil {
			var ce *connErr
			if errors.As(err, &ce) {
				c.goAway(ce.code, ce.msg)
				c.flushDirty()
				c.lingerAfterGoAway()
			}
			c.flushDirty()
			return err
		}
	}
}

func (c *Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *head:
		c.guard.sawTraffic()
		if c.side == sideDown {
			return c.onRequestHeaders(f)
		}
		return c.onResponseHeaders(f)
	case *http2.DataFrame:
		if f.Length > 0 {
			c.guard.sawTraffic()
		}
		return c.onData(f)
	case *http2.RSTStreamFrame:
		return c.onRST(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.guard.ping(); err != nil {
			return err
		}
		c.wmu.Lock()
		if !c.wdead {
			c.checkLocked(c.fr.WritePing(true, f.Data))
		}
		c.wmu.Unlock()
		c.markDirty(c)
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
		return c.guard.control()
	case *http2.PushPromiseFrame:
		return &connErr{http2.ErrCodeProtocol, "push is disabled"}
	}
	return nil
}

func (c *Conn) lookup(id uint32) *stream {
	c.smu.Lock()
	st := c.streams[id]
	c.smu.Unlock()
	return st
}

// checkIdle is a connection error for a frame on a stream the peer never
// opened (downstream).
func (c *Conn) checkIdle(id uint32) error {
	if c.side == sideUp {
		return nil
	}
	c.smu.Lock()
	idle := id > c.lastPeerID
	c.smu.Unlock()
	if idle {
		return &connErr{http2.ErrCodeProtocol, "frame on an idle stream"}
	}
	return nil
}

// wellFormed checks a request head the Framer let through: the
// pseudo-header fields a request needs, and no connection-specific field
// (RFC 9113, 8.2.2 and 8.3.1).
func wellFormed(f *head) bool {
	if f.HasPriority() && f.Priority.StreamDep == f.StreamID {
		return false
	}
	method := f.PseudoValue("method")
	if method == "" {
		return false
	}
	if method != "CONNECT" && (f.PseudoValue("scheme") == "" || f.PseudoValue("path") == "") {
		return false
	}
	for _, hf := range f.RegularFields() {
		if hopField(hf.Name) || (hf.Name == "te" && hf.Value != "trailers") {
			return false
		}
	}
	return true
}

// streamError resets one stream after a frame error on it.
func (c *Conn) streamError(id uint32, code http2.ErrCode) {
	if st := c.lookup(id); st != nil {
		c.resetBoth(st, -1, code, false)
		return
	}
	c.smu.Lock()
	if c.side == sideDown && id > c.lastPeerID {
		c.lastPeerID = id
	}
	c.smu.Unlock()
	c.wmu.Lock()
	c.writeRSTLocked(id, code)
	c.wmu.Unlock()
	c.markDirty(c)
}

// refuse resets a new stream the connection does not take.
func (c *Conn) refuse(id uint32, code http2.ErrCode) {
	c.wmu.Lock()
	c.writeRSTLocked(id, code)
	c.wmu.Unlock()
	c.markDirty(c)
}

func (c *Conn) onRequestHeaders(f *head) error {
	id := f.StreamID
	if st := c.lookup(id); st != nil {
		// Request trailers: they end the stream.
		if !f.StreamEnded() {
			c.resetBoth(st, -1, http2.ErrCodeProtocol, false)
			return nil
		}
		d := &st.ends[sideDown]
		if d.recvEnded.Load() {
			c.resetBoth(st, -1, http2.ErrCodeStreamClosed, false)
			return nil
		}
		d.recvEnded.Store(true)
		if st.local {
			return nil
		}
		if st.copying {
			c.copyEnd(st, false) // a request with trailers is not copied
		}
		if h := st.hold; h != nil && c.holdTrailers(st, h, filterFields(f.RegularFields())) {
			// Trailers end a held request: it goes on without retries.
			return nil
		}
		c.forwardHeaders(st, &st.ends[sideUp], filterFields(f.RegularFields()), true, false)
		return nil
	}
	c.smu.Lock()
	if id%2 == 0 || id <= c.lastPeerID {
		last, ours := c.lastPeerID, c.resetLately(id)
		c.smu.Unlock()
		switch {
		case id%2 == 0:
			return &connErr{http2.ErrCodeProtocol, "even stream id from a client"}
		case ours:
			return nil // sent before the peer saw the proxy's reset
		case id == last:
			return &connErr{http2.ErrCodeStreamClosed, "headers on a closed stream"}
		}
		return &connErr{http2.ErrCodeProtocol, "stream id lower than one already used"}
	}
	c.lastPeerID = id
	full := uint32(c.active) >= c.cfg.MaxConcurrentStreams
	c.smu.Unlock()
	c.wmu.Lock()
	draining := c.goAwaySent
	c.wmu.Unlock()
	if draining || full {
		c.refuse(id, http2.ErrCodeRefusedStream)
		if full {
			return c.guard.control()
		}
		return nil
	}
	if err := c.guard.opened(); err != nil {
		return err
	}
	if !wellFormed(f) {
		// A malformed request is a stream error (RFC 9113, 8.1.1).
		c.refuse(id, http2.ErrCodeProtocol)
		return nil
	}
	st := newStream(c, id, c.h)
	d := &st.ends[sideDown]
	d.recvEnded.Store(f.StreamEnded())
	c.smu.Lock()
	c.streams[id] = st
	c.active++
	c.smu.Unlock()

	req := &c.req
	*req = Request{Conn: c, EndStream: f.StreamEnded()}
	for _, hf := range f.Fields {
		switch hf.Name {
		case ":method":
			req.Method = hf.Value
		case ":scheme":
			req.Scheme = hf.Value
		case ":authority":
			req.Authority = hf.Value
		case ":path":
			req.Path = hf.Value
		}
	}
	req.Fields = f.RegularFields()
	if req.Authority == "" {
		req.Authority = req.Get("host")
	}
	req.Del("host")
	st.res.Method, st.res.Path, st.res.Authority = req.Method, req.Path, req.Authority
	switch {
	case f.Truncated:
		c.answer(st, &Response{Status: 431, Body: "trellis: request header fields too large\n"})
		return nil
	case req.Method == "CONNECT":
		c.answer(st, &Response{Status: 501, Body: "trellis: CONNECT over HTTP/2 is not supported\n"})
		return nil
	case req.Path[0] != '/' && !(req.Method == "OPTIONS" && req.Path == "*"):
		c.answer(st, &Response{Status: 400, Body: "trellis: the request path must start with /\n"})
		return nil
	}
	up, local, tag := c.h.Route(req)
	st.res.Tag = tag
	st.res.Method, st.res.Path, st.res.Authority = req.Method, req.Path, req.Authority
	if local != nil || up == nil {
		if local == nil {
			local = &Response{Status: 502, Body: "trellis: no upstream\n"}
		}
		c.answer(st, local)
		return nil
	}
	if !req.Deadline.IsZero() && req.Expired != nil {
		c.setDeadline(st, req.Deadline, req.Expired)
	}
	if req.Copy && req.EndStream {
		req.Copy = false
	}
	st.copying = req.Copy
	_, retrier := c.h.(Retrier)
	if retry := retrier && req.Hold; retry || req.Delay > 0 {
		c.hold(st, req, up, retry)
		return nil
	}
	if !up.open(st, req) {
		c.answer(st, &Response{Status: 503, Body: "trellis: the upstream connection closed; retry\n"})
		return nil
	}
	st.mu.Lock()
	st.routed = true
	st.mu.Unlock()
	c.markDirty(up)
	return nil
}

// open starts st's upstream end on c (upstream) with req's head; false
// means c no longer takes streams.
func (c *Conn) open(st *stream, req *Request) bool {
	var buf [24]hpack.HeaderField
	return c.openWith(st, requestFields(req, buf[:0]), st.ends[sideDown].recvEnded.Load())
}

// openWith starts st's upstream end on c with the request head fields,
// ending the stream with them when end is set.
func (c *Conn) openWith(st *stream, fields []hpack.HeaderField, end bool) bool {
	u := &st.ends[sideUp]
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdead || c.goingAway.Load() || c.nextID >= 1<<31-1 {
		return false
	}
	// The end is set and the stream registered under st.mu, so that a
	// stream finished meanwhile (a held one, on another goroutine) is
	// never opened, and finish always sees where it went.
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		return false
	}
	u.st, u.c, u.id = st, c, c.nextID
	u.recvWin.Store(c.cfg.StreamWindow)
	u.sendWin = int64(c.peerInitWin)
	c.smu.Lock()
	c.streams[u.id] = st
	c.active++
	c.smu.Unlock()
	st.mu.Unlock()
	c.nextID += 2
	c.writeHeadersLocked(u.id, fields, end)
	if end {
		u.sentEnd = true
	}
	return true
}

// answer gives a stream the proxy's own response and ends it.
func (c *Conn) answer(st *stream, r *Response) {
	st.mu.Lock()
	st.local = true
	st.res.Local = true
	st.res.Status = r.Status
	st.mu.Unlock()
	d := &st.ends[sideDown]
	c.wmu.Lock()
	c.respondLocked(d, r)
	c.wmu.Unlock()
	c.markDirty(c)
	st.finish(false, false)
}

// respondLocked writes r to the downstream end d and ends the stream
// there; the rest of a request still coming is refused with
// RST_STREAM(NO_ERROR). c.wmu is held.
func (c *Conn) respondLocked(d *end, r *Response) {
	c.writeHeadersLocked(d.id, localFields(r), r.Body == "")
	if r.Body != "" && !c.wdead {
		c.checkLocked(c.fr.WriteData(d.id, true, []byte(r.Body)))
	}
	d.sentEnd = true
	if !d.recvEnded.Load() {
		c.writeRSTLocked(d.id, http2.ErrCodeNo)
		d.reset = true
	}
}

func (c *Conn) onResponseHeaders(f *head) error {
	st := c.lookup(f.StreamID)
	if st == nil {
		return nil
	}
	u := &st.ends[sideUp]
	if c.mayRetry(st) && c.retryHead(st, f) {
		return nil
	}
	end := f.StreamEnded()
	if end {
		u.recvEnded.Store(true)
	}
	fields := f.Fields
	head := false
	if !u.gotHeaders {
		code, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil || code < 100 || code > 999 {
			c.resetBoth(st, -1, http2.ErrCodeProtocol, false)
			return nil
		}
		if code >= 200 {
			u.gotHeaders, head = true, true
			st.mu.Lock()
			if !st.finished {
				st.res.Status, st.res.Head = code, time.Now()
			}
			st.mu.Unlock()
		} else if end {
			c.resetBoth(st, -1, http2.ErrCodeProtocol, false)
			return nil
		}
	} else {
		if !end {
			c.resetBoth(st, -1, http2.ErrCodeProtocol, false)
			return nil
		}
		fields = f.RegularFields()
	}
	if end {
		if g := grpcStatus(fields); g >= 0 {
			st.mu.Lock()
			if !st.finished {
				st.res.GRPCStatus = g
			}
			st.mu.Unlock()
		}
	}
	if rw, ok := st.res.Tag.(ResponseRewriter); ok && head {
		fields = rw.RewriteResponse(fields)
	}
	c.forwardHeaders(st, &st.ends[sideDown], filterFields(fields), end, head)
	return nil
}

// forwardHeaders sends a head or trailers to e, after any data queued for
// it; head says it is a final response head.
func (c *Conn) forwardHeaders(st *stream, e *end, fields []hpack.HeaderField, endStream, head bool) {
	ec := e.c
	ec.wmu.Lock()
	if e.reset || e.sentEnd || ec.wdead {
		ec.wmu.Unlock()
		return
	}
	ended := false
	e.headSent = e.headSent || head
	if endStream && (len(e.pend) > 0 || e.queued) {
		// They wait for the data: a copy, as fields are the reader's.
		e.pendTrailers, e.pendEnd = append([]hpack.HeaderField(nil), fields...), true
	} else {
		ec.writeHeadersLocked(e.id, fields, endStream)
		if endStream {
			e.sentEnd, ended = true, true
		}
	}
	ec.wmu.Unlock()
	c.markDirty(ec)
	if ended {
		st.sentEnd()
	}
}

func (c *Conn) onData(f *http2.DataFrame) error {
	length := int(f.Length)
	if c.recvConnWin.Add(-int64(length)) < 0 {
		return &connErr{http2.ErrCodeFlowControl, "data beyond the connection window"}
	}
	if length > 0 {
		c.creditConn(length)
		c.markDirty(c)
	}
	data := f.Data()
	st := c.lookup(f.StreamID)
	if st == nil {
		if c.side == sideUp {
			return nil // reset here; frames in flight
		}
		c.smu.Lock()
		idle, ours := f.StreamID > c.lastPeerID, c.resetLately(f.StreamID)
		c.smu.Unlock()
		switch {
		case idle:
			return &connErr{http2.ErrCodeProtocol, "data on an idle stream"}
		case !ours:
			c.refuse(f.StreamID, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	e := &st.ends[c.side]
	if e.recvEnded.Load() {
		c.resetBoth(st, -1, http2.ErrCodeStreamClosed, false)
		return nil
	}
	if e.recvWin.Add(-int32(length)) < 0 {
		c.resetBoth(st, -1, http2.ErrCodeFlowControl, false)
		return nil
	}
	if length == 0 && !f.StreamEnded() {
		if err := c.guard.control(); err != nil {
			return err
		}
	}
	end := f.StreamEnded()
	if end {
		e.recvEnded.Store(true)
	}
	if c.side == sideDown && length > 0 {
		st.bodyMoves.Add(1)
	}
	if st.copying && c.side == sideDown {
		c.copyData(st, data, end)
	}
	if h := st.hold; h != nil && c.side == sideDown && c.holdData(st, h, data, end, length-len(data)) {
		return nil
	}
	credit := length - len(data) // padding is not forwarded
	o := e.other()
	var ended bool
	if st.local || o.c == nil {
		credit = length
	} else {
		o.c.wmu.Lock()
		sent, ok := o.sendDataLocked(data, end)
		if sent > 0 && o.c.spill.Spilled() && !o.reset {
			// The caller is behind: the stream's window comes back when
			// it has read what waits.
			o.c.deferred = append(o.c.deferred, deferredCredit{e: e, n: sent})
			sent = 0
		}
		o.c.wmu.Unlock()
		c.markDirty(o.c)
		credit += sent
		ended = ok
	}
	if credit > 0 {
		c.creditStream(e, credit)
		c.markDirty(c)
	}
	if ended {
		st.sentEnd()
	}
	return nil
}

func (c *Conn) onRST(f *http2.RSTStreamFrame) error {
	st := c.lookup(f.StreamID)
	if st == nil {
		return c.checkIdle(f.StreamID)
	}
	e := &st.ends[c.side]
	c.wmu.Lock()
	e.reset = true
	c.wmu.Unlock()
	if c.side == sideUp && c.mayRetry(st) && c.retryReset(st) {
		return nil
	}
	byCaller := c.side == sideDown
	if byCaller {
		st.mu.Lock()
		started := st.res.Status != 0
		st.mu.Unlock()
		if err := c.guard.reset(!started); err != nil {
			c.resetBoth(st, c.side, f.ErrCode, true)
			return err
		}
	}
	c.resetBoth(st, c.side, f.ErrCode, byCaller)
	return nil
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := c.guard.control(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var bad error
	var delta int64
	_ = f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			var ce http2.ConnectionError
			errors.As(err, &ce)
			bad = &connErr{http2.ErrCode(ce), "invalid setting " + s.String()}
			return nil
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			if s.Val > 1<<31-1 {
				bad = &connErr{http2.ErrCodeFlowControl, "initial window too large"}
				return nil
			}
			delta = int64(s.Val) - int64(c.peerInitWin)
			c.peerInitWin = int32(s.Val)
		case http2.SettingMaxFrameSize:
			if s.Val < 16384 || s.Val > 1<<24-1 {
				bad = &connErr{http2.ErrCodeProtocol, "bad max frame size"}
				return nil
			}
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxConc.Store(s.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(min(s.Val, 4096))
		}
		return nil
	})
	if bad != nil {
		return bad
	}
	if delta != 0 {
		c.smu.Lock()
		for _, st := range c.streams {
			st.ends[c.side].sendWin += delta
		}
		c.smu.Unlock()
	}
	if !c.wdead {
		c.checkLocked(c.fr.WriteSettingsAck())
	}
	c.markDirty(c)
	if delta > 0 {
		moved := c.drainLocked(nil)
		if len(moved) > 0 {
			c.wmu.Unlock()
			c.afterMoved(moved)
			c.wmu.Lock()
		}
	}
	return nil
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.wmu.Lock()
	if f.StreamID == 0 {
		c.sendWin += inc
		if c.sendWin > 1<<31-1 {
			c.wmu.Unlock()
			return &connErr{http2.ErrCodeFlowControl, "connection window overflow"}
		}
	} else {
		st := c.lookup(f.StreamID)
		if st == nil {
			c.wmu.Unlock()
			return c.checkIdle(f.StreamID)
		}
		e := &st.ends[c.side]
		if e.sendWin+inc > 1<<31-1 {
			c.wmu.Unlock()
			c.resetBoth(st, -1, http2.ErrCodeFlowControl, false)
			return nil
		}
		e.sendWin += inc
	}
	var moved []movedData
	if len(c.blocked) > 0 {
		moved = c.drainLocked(nil)
	}
	c.wmu.Unlock()
	if len(moved) > 0 {
		c.markDirty(c)
		c.afterMoved(moved)
	}
	return nil
}

func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	if c.side == sideDown {
		// A caller that will open no more streams: the connection stays
		// up for the ones it has and closes when the caller closes it
		// (or idles out), as net/http's server does.
		return
	}
	c.goingAway.Store(true)
	// Streams past the last one the peer took never ran there: they are
	// refused downstream, so clients retry them elsewhere.
	c.smu.Lock()
	var refused []*stream
	for id, st := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, st)
		}
	}
	c.smu.Unlock()
	for _, st := range refused {
		c.resetBoth(st, -1, http2.ErrCodeRefusedStream, false)
	}
	c.closeIfDrained()
}

// lingerAfterGoAway half-closes a connection ended with an error GOAWAY
// and reads what the peer still sends for a moment (a bounded amount):
// closing with unread bytes would reset the connection, and the peer
// could lose the GOAWAY that says why.
func (c *Conn) lingerAfterGoAway() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.nc.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.CopyN(io.Discard, c.br, 4<<20)
}

// teardown ends every stream of a connection whose reader stopped.
func (c *Conn) teardown() {
	c.closed.Store(true)
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.bodies != nil {
		c.bodies.Stop()
	}
	c.wmu.Lock()
	c.flushLocked()
	c.wdead = true
	c.wmu.Unlock()
	_ = c.nc.Close()
	if c.pool != nil {
		// Before the streams end: a retry must not come back here.
		c.pool.remove(c)
	}
	c.smu.Lock()
	left := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		left = append(left, st)
	}
	c.smu.Unlock()
	for _, st := range left {
		st.mu.Lock()
		started := st.res.Status != 0
		st.mu.Unlock()
		if c.side == sideUp && !started && !st.ends[sideDown].sentEnd {
			// Nothing of the response came: the request goes again
			// when a policy lets it, else a 502 says so.
			if !c.mayRetry(st) || !c.retryReset(st) {
				c.upstreamLost(st)
			}
			continue
		}
		code := http2.ErrCodeCancel
		if c.side == sideUp {
			code = http2.ErrCodeInternal
		}
		c.resetBoth(st, c.side, code, c.side == sideDown)
	}
	c.flushDirty()
}

// upstreamLost answers a stream whose upstream connection died before its
// response began.
func (c *Conn) upstreamLost(st *stream) {
	d := &st.ends[sideDown]
	dc := d.c
	dc.wmu.Lock()
	if !d.reset && !d.sentEnd {
		st.mu.Lock()
		if !st.finished {
			st.res.Status = 502
		}
		st.mu.Unlock()
		dc.respondLocked(d, &Response{Status: 502, Body: "trellis: the upstream connection broke before a response\n"})
		d.reset = true
	}
	dc.wmu.Unlock()
	c.markDirty(dc)
	u := &st.ends[sideUp]
	c.wmu.Lock()
	u.reset = true
	c.wmu.Unlock()
	st.finish(true, false)
}
