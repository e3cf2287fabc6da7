//go:build linux

package dataplane

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawPair returns a raw-I/O client connection and the server's end.
func rawPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	rc := rawIO(c)
	if _, ok := rc.(*rawIOConn); !ok {
		t.Fatalf("rawIO(%T) = %T, want *rawIOConn", c, rc)
	}
	return rc, s
}

// TestRawIOLargeWriteWaitsForReader: a write larger than the socket
// buffers returns only when all of it went out (EAGAIN waits in the
// netpoller), and the bytes arrive intact.
func TestRawIOLargeWriteWaitsForReader(t *testing.T) {
	c, s := rawPair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // let the writer fill the buffers
		b, _ := io.ReadAll(s)
		got <- b
	}()
	n, err := c.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	_ = c.(*rawIOConn).CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("reader got %d bytes, want %d identical", len(b), len(want))
	}
}

// TestRawIOReadEOFDeadlineAndClose: reads see data, EOF at the peer's
// close, a read deadline as os.ErrDeadlineExceeded, and a local close as
// net.ErrClosed, as net's own conns report them.
func TestRawIOReadEOFDeadlineAndClose(t *testing.T) {
	c, s := rawPair(t)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var buf [16]byte
	if _, err := c.Read(buf[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if _, err := c.Read(buf[:]); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read past deadline: %v, want a net.Error with Timeout()", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c, buf[:5]); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("read = %q, %v; want hello", buf[:n], err)
	}
	s.Close()
	if n, err := c.Read(buf[:]); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed = %d, %v; want 0, EOF", n, err)
	}
	c.Close()
	if _, err := c.Read(buf[:]); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
}
