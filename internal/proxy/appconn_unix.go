//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// connAlive peeks at an idle keep-alive connection without blocking: the
// app may have closed it (FIN pending) while it sat in the pool. Costs one
// non-blocking recv, done only for connections idle for a while.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: open and quiet. Otherwise the app closed it (0 bytes),
		// sent a response nobody asked for, or it failed: not reusable.
		alive = err == syscall.EAGAIN
		return true
	})
	return err == nil && alive
}
