//go:build linux

package proxy

import (
	"io"
	"net"
	"os"
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
	return &rawIOConn{TCPConn: tc, rc: rc}
}

// NetConn exposes the socket (peeks, half-close).
func (c *rawIOConn) NetConn() net.Conn { return c.TCPConn }

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
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

func (c *rawIOConn) Write(p []byte) (int, error) {
	var (
		nn    int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for nn < len(p) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[nn])), uintptr(len(p)-nn))
			switch e {
			case 0:
				nn += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
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
