package h2relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TryWriter is a socket that can attempt a write without waiting: it
// writes what the kernel takes at once and returns.
type TryWriter interface {
	TryWrite(p []byte) (int, error)
}

// Spill keeps the writers of a downstream connection from ever waiting on
// it. Several readers write to one downstream connection (every upstream
// connection that carries one of its streams), so a caller that stops
// reading its socket would otherwise stall the reader of a connection
// other callers share. Once enabled, a write the kernel does not take at
// once waits in a buffer that a goroutine drains; a caller that leaves
// more than the limit unread is cut off (its connection closes).
// Flow control keeps a reading caller far below the limit.
//
// Until Enable, writes go straight to the socket (and may wait), so the
// same socket can first serve a TLS handshake or another protocol.
type Spill struct {
	nc  net.Conn
	try TryWriter

	on       atomic.Bool
	mu       sync.Mutex
	over     []byte
	draining bool
	limit    int
	timeout  time.Duration
	err      error
	// spilled mirrors len(over) for lock-free checks; drained is called
	// (outside the lock) each time the buffer empties.
	spilled atomic.Int64
	drained func()
}

// NewSpill wraps the socket nc (a TryWriter, or writes keep waiting).
func NewSpill(nc net.Conn) *Spill {
	s := &Spill{nc: nc}
	s.try, _ = nc.(TryWriter)
	return s
}

// Enable starts spilling, with at most limit bytes waiting and each
// blocked socket write given timeout.
func (s *Spill) Enable(limit int, timeout time.Duration) {
	s.mu.Lock()
	s.limit, s.timeout = limit, timeout
	s.mu.Unlock()
	if s.try != nil {
		s.on.Store(true)
	}
}

// errSpillFull is the error of a caller cut off for not reading.
var errSpillFull = errors.New("h2relay: the peer left too much unread")

// Write never waits once enabled.
func (s *Spill) Write(p []byte) (int, error) {
	if !s.on.Load() {
		return s.nc.Write(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	if !s.draining && len(s.over) == 0 {
		w, err := s.try.TryWrite(p)
		if err != nil {
			s.err = err
			return w, err
		}
		p = p[w:]
		if len(p) == 0 {
			return n, nil
		}
	}
	if len(s.over)+len(p) > s.limit {
		s.err = errSpillFull
		_ = s.nc.Close()
		return 0, s.err
	}
	s.over = append(s.over, p...)
	s.spilled.Store(int64(len(s.over)))
	if !s.draining {
		s.draining = true
		go s.drain()
	}
	return n, nil
}

// drain writes the spilled bytes, waiting on the socket, until none are
// left.
func (s *Spill) drain() {
	var buf []byte
	for {
		s.mu.Lock()
		if len(s.over) == 0 || s.err != nil {
			s.draining = false
			s.spilled.Store(0)
			drained := s.drained
			s.mu.Unlock()
			if drained != nil {
				drained()
			}
			return
		}
		buf, s.over = s.over, buf[:0]
		timeout := s.timeout
		s.mu.Unlock()
		_ = s.nc.SetWriteDeadline(time.Now().Add(timeout))
		_, err := s.nc.Write(buf)
		_ = s.nc.SetWriteDeadline(time.Time{})
		if err != nil {
			s.mu.Lock()
			s.err, s.draining = err, false
			s.spilled.Store(0)
			s.mu.Unlock()
			_ = s.nc.Close()
			return
		}
	}
}

// Spilled reports whether bytes wait to be written (nil-safe).
func (s *Spill) Spilled() bool { return s != nil && s.spilled.Load() > 0 }

// OnDrained sets what is called each time the waiting bytes are all
// written (or the connection failed).
func (s *Spill) OnDrained(f func()) {
	s.mu.Lock()
	s.drained = f
	s.mu.Unlock()
}

// SpillConn is a connection whose writes go through a Spill: the socket
// under a TLS connection, so the relay can spill its encrypted records.
type SpillConn struct {
	net.Conn
	S *Spill
}

// NewSpillConn wraps nc; writes wait until S is enabled.
func NewSpillConn(nc net.Conn) *SpillConn { return &SpillConn{Conn: nc, S: NewSpill(nc)} }

func (c *SpillConn) Write(p []byte) (int, error) { return c.S.Write(p) }

// NetConn exposes the socket (peeks, half-close).
func (c *SpillConn) NetConn() net.Conn { return c.Conn }

var _ io.Writer = (*Spill)(nil)
