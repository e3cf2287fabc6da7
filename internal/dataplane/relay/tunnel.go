package relay

import (
	"io"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// copyBufSize is the size of pooled copy buffers: large enough to move a
// full TLS record (16 KiB) plus framing per read.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

func getBuf() *[]byte  { return copyBufs.Get().(*[]byte) }
func putBuf(b *[]byte) { copyBufs.Put(b) }

// Pipe relays bytes both ways between the caller's side a and the
// destination's side b until both directions end, then closes both. ar and
// br are what to read a and b from (they may hold bytes buffered before the
// tunnel began). A direction that ends cleanly half-closes its destination
// so request/response protocols see EOF; if that is impossible, or a
// direction fails, both connections are closed to end the other direction.
// received counts caller-to-destination bytes, sent the reverse; either may
// be nil.
func Pipe(a io.ReadWriteCloser, ar io.Reader, b io.ReadWriteCloser, br io.Reader, received, sent prometheus.Counter) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { closeQuietly(a); closeQuietly(b) }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay(b, ar, received, closeBoth)
	}()
	relay(a, br, sent, closeBoth)
	<-done
	closeBoth()
}

// relay copies src to dst with a pooled buffer. It avoids io.Copy on
// purpose: net.TCPConn's ReadFrom/WriteTo fall back to allocating their own
// buffer when the other side is a TLS conn.
func relay(dst io.Writer, src io.Reader, count prometheus.Counter, closeBoth func()) {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth()
				return
			}
			if count != nil {
				count.Add(float64(n))
			}
		}
		if rerr == io.EOF {
			if !CloseWrite(dst) {
				closeBoth()
			}
			return
		}
		if rerr != nil {
			closeBoth()
			return
		}
	}
}

// CloseWrite half-closes c (TCP FIN, or TLS close_notify), unwrapping
// connection wrappers; it reports false when c cannot be half-closed.
func CloseWrite(c any) bool {
	for {
		switch x := c.(type) {
		case interface{ CloseWrite() error }:
			return x.CloseWrite() == nil
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return false
		}
	}
}

func closeQuietly(c io.Closer) { _ = c.Close() }
