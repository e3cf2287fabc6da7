package h2relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Config sets one side's limits. Zero fields take the defaults below.
type Config struct {
	// MaxConcurrentStreams is advertised to downstream callers (250).
	MaxConcurrentStreams uint32
	// StreamWindow and ConnWindow are the flow-control windows granted to
	// the peer of every connection (512 KiB and 2 MiB): the most the
	// proxy holds for one stream and one connection.
	StreamWindow int32
	ConnWindow   int32
	// MaxHeaderListSize bounds a decoded header list (64 KiB).
	MaxHeaderListSize uint32
	// MaxSpill is the most a downstream caller may leave unread beyond
	// its socket's buffers before it is cut off (4 MiB; see Spill).
	MaxSpill int
	// IdleTimeout closes a connection without streams for this long (5 min).
	IdleTimeout time.Duration
	// BodyIdleTimeout ends a downstream stream whose request body makes
	// no progress for this long before its response begins: the caller
	// gets 408 with BodyIdleMessage and the upstream stream is reset. A
	// stream whose response has begun is the upstream's to keep, however
	// quiet (a gRPC bidi stream waiting for events). Zero: never.
	BodyIdleTimeout time.Duration
	// BodyIdleMessage is the body of that 408.
	BodyIdleMessage string
	// WriteTimeout ends a connection whose socket accepts nothing for this
	// long (10 s).
	WriteTimeout time.Duration
	// RapidResets is the number of streams a caller may reset before
	// their response within a second (and half of those it opened) before
	// its connection ends as a rapid-reset attack (100; see guard.go).
	RapidResets int
	// MaxConns is the size of a Pool (4); SoftStreams is the number of
	// streams on a pooled connection past which the pool dials another
	// (100).
	MaxConns    int
	SoftStreams int

	defaulted bool
}

// WithDefaults returns a copy of c with zero fields set to the defaults.
func (c Config) WithDefaults() *Config {
	d := c.withDefaults()
	d.defaulted = true
	return &d
}

func (c Config) withDefaults() Config {
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 250
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = 512 << 10
	}
	if c.ConnWindow == 0 {
		c.ConnWindow = 2 << 20
	}
	if c.MaxHeaderListSize == 0 {
		c.MaxHeaderListSize = 64 << 10
	}
	if c.MaxSpill == 0 {
		c.MaxSpill = 4 << 20
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.RapidResets == 0 {
		c.RapidResets = defaultRapidResets
	}
	if c.MaxConns == 0 {
		c.MaxConns = 4
	}
	if c.SoftStreams == 0 {
		c.SoftStreams = 100
	}
	if c.BodyIdleMessage == "" {
		c.BodyIdleMessage = "trellis: the request body made no progress\n"
	}
	return c
}

// Sides of a stream: ends[sideDown] is on the connection the proxy
// accepted, ends[sideUp] on the one it dialed.
const (
	sideDown = 0
	sideUp   = 1
)

// initialWindow is HTTP/2's default window, before SETTINGS change it.
const initialWindow = 65535

// Conn is one HTTP/2 connection of the relay, accepted (Serve) or dialed
// (Dial).
type Conn struct {
	nc   net.Conn
	cfg  *Config
	side int
	h    Handler // downstream only
	br   *bufio.Reader
	fr   *http2.Framer
	hdec *hpack.Decoder
	hd   head    // the last header block read (reader only)
	req  Request // the request being routed (reader only)

	// wmu guards everything that is sent on the connection: the buffer,
	// the HPACK encoder, the peer's windows, queued data and the stream
	// ids of new upstream streams.
	wmu          sync.Mutex
	bw           *bufio.Writer
	henc         *hpack.Encoder
	hbuf         bytes.Buffer
	sendWin      int64 // the peer's connection window
	peerInitWin  int32
	peerMaxFrame uint32
	nextID       uint32 // upstream: the next stream id
	blocked      []*end // ends with queued data
	connCredit   int32  // received bytes released and not yet granted back
	wdead        bool   // a write failed: nothing more is written
	goAwaySent   bool   // downstream: a GOAWAY went out
	deadlineSet  time.Time
	recvConnWin  atomic.Int64 // the window granted to the peer, left
	peerMaxConc  atomic.Uint32
	goingAway    atomic.Bool // upstream: the peer sent GOAWAY, or we drain
	closed       atomic.Bool
	lastActivity atomic.Int64

	// smu guards the stream table.
	smu        sync.Mutex
	streams    map[uint32]*stream
	lastPeerID uint32 // downstream: the highest stream id the peer opened
	// resetIDs are the downstream streams the proxy reset lately: frames
	// the peer sent before it saw the reset are ignored, not errors.
	resetIDs [32]uint32
	resetPos int
	active   int
	done     chan struct{}

	guard guard
	// dirty are the connections this reader wrote to since its last
	// flush (reader goroutine only).
	dirty []*Conn
	pool  *Pool // upstream: the pool it belongs to
	// spill is where a downstream connection's writes wait (nil when they
	// block); deferred are the stream credits held back while it holds
	// bytes (under wmu).
	spill    *Spill
	deferred []deferredCredit
	idle     *time.Timer
	bodies   *time.Timer // see watchBodies
}

func newConn(nc net.Conn, w io.Writer, cfg *Config, side int) *Conn {
	if !cfg.defaulted {
		d := cfg.withDefaults()
		d.defaulted = true
		cfg = &d
	}
	c := &Conn{
		nc:           nc,
		cfg:          cfg,
		side:         side,
		streams:      make(map[uint32]*stream),
		sendWin:      initialWindow,
		peerInitWin:  initialWindow,
		peerMaxFrame: 16384,
		nextID:       1,
	}
	c.peerMaxConc.Store(100)
	c.guard.rapid = cfg.RapidResets
	c.guard.off = side == sideUp
	c.br = bufio.NewReaderSize(nc, 32<<10)
	if w == nil {
		w = deadlineWriter{c}
	}
	c.bw = bufio.NewWriterSize(w, 32<<10)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	// The proxy advertises the default SETTINGS_MAX_FRAME_SIZE: a larger
	// frame is a FRAME_SIZE_ERROR.
	c.fr.SetMaxReadFrameSize(16384)
	c.fr.MaxHeaderListSize = cfg.MaxHeaderListSize
	c.hdec = hpack.NewDecoder(4096, c.emit)
	c.hdec.SetMaxStringLength(int(cfg.MaxHeaderListSize))
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.recvConnWin.Store(int64(cfg.ConnWindow))
	c.touch()
	return c
}

// deadlineWriter writes to the socket within WriteTimeout, setting the
// deadline at most once a second (it moves forward with time).
type deadlineWriter struct{ c *Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	c := w.c
	if now := time.Now(); now.Sub(c.deadlineSet) > time.Second {
		c.deadlineSet = now
		_ = c.nc.SetWriteDeadline(now.Add(c.cfg.WriteTimeout))
	}
	return c.nc.Write(p)
}

func (c *Conn) touch() { c.lastActivity.Store(time.Now().UnixNano()) }

// settings are the ones every relay connection sends.
func (c *Conn) settings() []http2.Setting {
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.StreamWindow)},
		{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.MaxHeaderListSize},
	}
	if c.side == sideDown {
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams})
	} else {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	return s
}

// start sends the connection preface (upstream), SETTINGS and the
// connection window, and flushes.
func (c *Conn) start() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.side == sideUp {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
	}
	_ = c.fr.WriteSettings(c.settings()...)
	if inc := c.cfg.ConnWindow - initialWindow; inc > 0 {
		_ = c.fr.WriteWindowUpdate(0, uint32(inc))
	}
	return c.bw.Flush()
}

// markDirty notes that this reader wrote to d.
func (c *Conn) markDirty(d *Conn) {
	for _, x := range c.dirty {
		if x == d {
			return
		}
	}
	c.dirty = append(c.dirty, d)
}

// flushDirty flushes every connection this reader wrote to.
func (c *Conn) flushDirty() {
	for i, d := range c.dirty {
		d.wmu.Lock()
		d.flushLocked()
		d.wmu.Unlock()
		c.dirty[i] = nil
	}
	c.dirty = c.dirty[:0]
}

// flushLocked writes the buffer out; a failure kills the connection.
func (c *Conn) flushLocked() {
	if c.wdead || c.bw.Buffered() == 0 {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.writeFailedLocked()
	}
}

// writeFailedLocked marks the connection dead after a failed write; its
// reader ends when the socket closes.
func (c *Conn) writeFailedLocked() {
	if c.wdead {
		return
	}
	c.wdead = true
	_ = c.nc.Close()
}

// checkLocked marks the connection dead after a failed Framer write.
func (c *Conn) checkLocked(err error) {
	if err != nil {
		c.writeFailedLocked()
	}
}

// writeHeadersLocked encodes fields with the connection's HPACK state and
// writes them as HEADERS and CONTINUATION frames.
func (c *Conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) {
	if c.wdead {
		return
	}
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame)
	first := true
	for first || len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			c.writeFailedLocked()
			return
		}
	}
}

// writeRSTLocked resets a stream.
func (c *Conn) writeRSTLocked(id uint32, code http2.ErrCode) {
	if c.side == sideDown {
		c.smu.Lock()
		c.resetIDs[c.resetPos%len(c.resetIDs)] = id
		c.resetPos++
		c.smu.Unlock()
	}
	if !c.wdead {
		c.checkLocked(c.fr.WriteRSTStream(id, code))
	}
}

// resetLately reports whether the proxy reset stream id lately (smu held).
func (c *Conn) resetLately(id uint32) bool {
	for _, x := range c.resetIDs {
		if x == id {
			return true
		}
	}
	return false
}

// goAway sends GOAWAY with the last stream the connection will serve and
// flushes it.
func (c *Conn) goAway(code http2.ErrCode, debug string) {
	c.smu.Lock()
	last := c.lastPeerID
	c.smu.Unlock()
	c.wmu.Lock()
	if !c.wdead && !c.goAwaySent {
		c.goAwaySent = true
		c.checkLocked(c.fr.WriteGoAway(last, code, []byte(debug)))
		c.flushLocked()
	}
	c.wmu.Unlock()
}

// Close closes the connection at once; its streams are reset.
func (c *Conn) Close() error { return c.nc.Close() }

// Active is the number of open streams.
func (c *Conn) Active() int {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.active
}

// Drain sends a GOAWAY (downstream) and closes the connection once its
// streams are done. Streams the peer opens after the GOAWAY are refused,
// so a gRPC client retries them on another connection.
func (c *Conn) Drain() {
	c.goingAway.Store(true)
	if c.side == sideDown {
		c.goAway(http2.ErrCodeNo, "draining")
	}
	c.closeIfDrained()
}

// closeIfDrained closes a draining connection without streams.
func (c *Conn) closeIfDrained() {
	if !c.goingAway.Load() {
		return
	}
	c.smu.Lock()
	n := c.active
	c.smu.Unlock()
	if n == 0 {
		c.wmu.Lock()
		c.flushLocked()
		c.wmu.Unlock()
		_ = c.nc.Close()
	}
}

// watchIdle closes the connection once it has had no stream for
// IdleTimeout.
func (c *Conn) watchIdle() {
	d := c.cfg.IdleTimeout
	c.idle = time.AfterFunc(d/2, func() {
		if c.closed.Load() {
			return
		}
		if c.Active() == 0 && time.Since(time.Unix(0, c.lastActivity.Load())) >= d {
			c.Drain()
			_ = c.nc.Close()
			return
		}
		c.idle.Reset(d / 2)
	})
}

// errPreface is a downstream connection that does not begin with the
// HTTP/2 client preface.
var errPreface = errors.New("h2relay: the connection does not start with the HTTP/2 client preface")

// readPreface consumes the client preface.
func readPreface(r io.Reader) error {
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return err
	}
	if string(buf[:]) != http2.ClientPreface {
		return errPreface
	}
	return nil
}
