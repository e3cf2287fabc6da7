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
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int32
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("SIOCOUTQ: %w", errno)
	}
	return int(n), nil
}
