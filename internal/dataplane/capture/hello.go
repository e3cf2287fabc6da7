package capture

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/trellismesh/trellis/internal/h1"
)

// Protocols SniffHost recognizes.
const (
	HelloTLS  = "tls"
	HelloHTTP = "http"
)

// maxHello bounds the bytes SniffHost reads: a ClientHello is at most one
// 64 KiB handshake message (crypto/tls's own limit) in 16 KiB records.
const maxHello = 64<<10 + 5*5

// maxHTTPHead bounds an HTTP/1 request head read for its Host.
const maxHTTPHead = 16 << 10

// Hello is what a connection's first bytes say about where it is going.
type Hello struct {
	// Proto is HelloTLS, HelloHTTP or "" (neither, or not decided).
	Proto string
	// Host is the TLS SNI or the HTTP Host (absolute-form target first),
	// as sent; "" when the connection names none.
	Host string
	// Prefix is every byte read from the connection, to be sent on first.
	Prefix []byte
}

// errHelloSeen stops crypto/tls's server handshake once the ClientHello
// has been parsed.
var errHelloSeen = errors.New("client hello seen")

// SniffHost reads c's first bytes, for at most timeout, until they show a
// TLS ClientHello (its SNI, parsed by crypto/tls) or an HTTP/1 request
// head (its Host, parsed by internal/h1, or net/http for the forms h1
// leaves to it), and returns what they name and every byte read. Nothing
// is written to c. A connection that sends something else, or nothing in
// time, or a malformed hello, names no host (err nil, Proto ""); err is
// set only when c ended or failed before sending a byte.
func SniffHost(c net.Conn, timeout time.Duration) (Hello, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Hello{}, err
	}
	r := &replayReader{r: c, max: maxHello}
	h, err := sniffHost(r)
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return Hello{}, err
	}
	h.Prefix = r.buf
	return h, err
}

// sniffHost is SniffHost on a reader, for tests and fuzzing.
func sniffHost(r *replayReader) (Hello, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return Hello{}, err
	}
	r.rewind()
	switch {
	case first[0] == tlsRecordHandshake:
		return Hello{Proto: HelloTLS, Host: clientHelloSNI(r)}, nil
	case 'A' <= first[0] && first[0] <= 'Z':
		if !requestLine(r) {
			return Hello{}, nil
		}
		r.rewind()
		host, ok := httpHost(r)
		if !ok {
			return Hello{}, nil
		}
		return Hello{Proto: HelloHTTP, Host: host}, nil
	}
	return Hello{}, nil
}

// tlsRecordHandshake is the first byte of every TLS connection.
const tlsRecordHandshake = 0x16

// clientHelloSNI runs crypto/tls's server handshake over r just far
// enough to parse the ClientHello, and returns its server name ("" for
// none or a hello crypto/tls refuses).
func clientHelloSNI(r *replayReader) string {
	var sni string
	var seen bool
	srv := tls.Server(helloConn{r: r}, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, seen = chi.ServerName, true
			return nil, errHelloSeen
		},
	})
	_ = srv.Handshake() // always fails: errHelloSeen, or a bad hello
	if !seen {
		return ""
	}
	return sni
}

// requestLine reads until the first bytes are decided (sniff): an
// HTTP/1.x request line or the HTTP/2 preface, or not (SSH's banner, say,
// also starts with a capital letter).
func requestLine(r *replayReader) bool {
	var chunk [512]byte
	for {
		switch sniff(r.buf) {
		case sniffHTTP:
			return true
		case sniffOpaque:
			return false
		}
		if len(r.buf) >= maxSniff {
			return true
		}
		if _, err := r.Read(chunk[:]); err != nil {
			return false
		}
	}
}

// httpHost parses an HTTP/1 request head from r: its Host, or the host
// of an absolute-form target. ok is false when r holds no request head.
func httpHost(r *replayReader) (host string, ok bool) {
	br := bufio.NewReaderSize(r, maxHTTPHead)
	var head h1.Head
	_, err := h1.ParseRequest(br, &head)
	if err == nil {
		return head.Host, true
	}
	if !errors.Is(err, h1.ErrUnsupported) {
		return "", false
	}
	// HTTP/1.0, absolute-form targets, Expect and the rest h1 leaves to
	// net/http: read the head again with it.
	r.rewind()
	req, err := http.ReadRequest(bufio.NewReaderSize(r, maxHTTPHead))
	if err != nil {
		return "", false
	}
	return req.Host, true
}

// replayReader reads from r and keeps every byte read (at most max), so
// that parsers can start over (rewind) and the bytes can be replayed.
type replayReader struct {
	r   io.Reader
	buf []byte
	pos int
	max int
}

var errHelloTooLarge = errors.New("connection's first bytes exceed the hello limit")

func (rr *replayReader) Read(p []byte) (int, error) {
	if rr.pos < len(rr.buf) {
		n := copy(p, rr.buf[rr.pos:])
		rr.pos += n
		return n, nil
	}
	room := rr.max - len(rr.buf)
	if room <= 0 {
		return 0, errHelloTooLarge
	}
	if len(p) > room {
		p = p[:room]
	}
	n, err := rr.r.Read(p)
	rr.buf = append(rr.buf, p[:n]...)
	rr.pos = len(rr.buf)
	return n, err
}

func (rr *replayReader) rewind() { rr.pos = 0 }

// helloConn is the net.Conn crypto/tls parses a ClientHello from: reads
// come from the replay reader, writes (the alert after the aborted
// handshake) go nowhere, so the client sees nothing of it.
type helloConn struct{ r *replayReader }

func (c helloConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (helloConn) Write(p []byte) (int, error)      { return len(p), nil }
func (helloConn) Close() error                     { return nil }
func (helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (helloConn) SetDeadline(time.Time) error      { return nil }
func (helloConn) SetReadDeadline(time.Time) error  { return nil }
func (helloConn) SetWriteDeadline(time.Time) error { return nil }
