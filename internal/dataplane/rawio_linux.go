//go:build linux

package dataplane

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawIOConn does a TCP socket's reads and writes as raw system calls on
// the non-blocking socket, waiting in the netpoller as net does. A plain
// net.Conn read or write tells the scheduler it enters a system call: at
// low request rates that wakes the sysmon thread out of its idle sleep and
// hands the P to another thread whenever a loopback write takes over 20µs,
// and those thread wake-ups cost more CPU than the I/O (perf, 1,000 rps:
// half the proxy's CPU in context switches). A non-blocking read or write
// returns at once, so it does not need that bookkeeping.
type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks handed to rc are made once (a closure per call would
	// be an allocation per read and write); their arguments and results
	// travel in these fields, under the direction's lock.
	readMu, writeMu sync.Mutex
	readFn, writeFn func(fd uintptr) bool
	tryFn           func(fd uintptr) bool
	rbuf, wbuf      []byte
	rn, wn          int
	rerr, werr      syscall.Errno
}

// rawIO wraps a TCP connection; other connections are returned as they
// are.
func rawIO(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawIOConn{TCPConn: tc, rc: rc}
	r.readFn, r.writeFn, r.tryFn = r.doRead, r.doWrite, r.doTry
	return r
}

// NetConn exposes the socket (peeks, half-close).
func (c *rawIOConn) NetConn() net.Conn { return c.TCPConn }

func (c *rawIOConn) doRead(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerr = int(r), e
		return true
	}
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.readMu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.readMu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawIOConn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

func (c *rawIOConn) Write(p []byte) (int, error) { return c.write(p, c.writeFn) }

// write runs fn (doWrite, which waits in the netpoller while the socket
// is full, or doTry, which does not) over p.
func (c *rawIOConn) write(p []byte, fn func(fd uintptr) bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.writeMu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(fn)
	nn, errno := c.wn, c.werr
	c.wbuf = nil
	c.writeMu.Unlock()
	switch {
	case err != nil:
		return nn, c.opError("write", err)
	case errno != 0:
		return nn, c.opError("write", os.NewSyscallError("write", errno))
	}
	return nn, nil
}

func (c *rawIOConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// TryWrite writes what the socket takes at once, without waiting
// (h2relay.TryWriter).
func (c *rawIOConn) TryWrite(p []byte) (int, error) { return c.write(p, c.tryFn) }

// doTry is doWrite that gives up at EAGAIN instead of waiting.
func (c *rawIOConn) doTry(fd uintptr) bool {
	c.doWrite(fd)
	return true
}
