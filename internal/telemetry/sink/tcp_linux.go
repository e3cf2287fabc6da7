package sink

import (
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// unacked is how many bytes written to c the peer's TCP stack has not
// acknowledged yet (SIOCOUTQ counts sent and unsent ones).
func unacked(c *net.TCPConn) (int, error) {
	var n int32
	err := control(c, func(fd uintptr) syscall.Errno {
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
		return errno
	})
	if err != nil {
		return 0, fmt.Errorf("SIOCOUTQ: %w", err)
	}
	return int(n), nil
}

// Linux TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpCloseWait   = 8
)

// tcpState tells whether the peer closed c (it sent a FIN) or reset it,
// without reading from it and whatever the read deadline. ok is false when
// the state cannot be had.
func tcpState(c *net.TCPConn) (gone, reset, ok bool) {
	var info [256]byte // struct tcp_info; tcpi_state is its first byte
	size := uint32(len(info))
	err := control(c, func(fd uintptr) syscall.Errno {
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
		return errno
	})
	if err != nil || size < 1 {
		return false, false, false
	}
	switch info[0] {
	case tcpEstablished:
		return false, false, true
	case tcpCloseWait:
		return true, false, true
	case tcpClose:
		// Nothing but a reset closes it while we hold it open.
		return true, true, true
	default:
		return true, false, true
	}
}

func control(c *net.TCPConn, f func(fd uintptr) syscall.Errno) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) { errno = f(fd) }); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
