//go:build unix

package upstream

import (
	"net"
	"syscall"
)

// tlsRecordAlert starts an alert record, close_notify among them.
const tlsRecordAlert = 0x15

// connAlive peeks at an idle keep-alive connection without blocking: the
// app may have closed it (FIN pending) while it sat in the pool. Costs one
// non-blocking recv, done only for connections idle for a while. It goes
// through Control, not Read, so a read deadline that has passed does not
// count against the connection.
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
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: open and quiet. Otherwise the app closed it (0 bytes),
		// sent a response nobody asked for, or it failed: not reusable.
		alive = err == syscall.EAGAIN
	})
	return err == nil && alive
}

// isTLSAlert reports whether a record header starts an alert: type 21 up
// to TLS 1.2; in TLS 1.3 every record says application data (23), and an
// encrypted alert is the one of exactly 19 bytes (2 alert bytes, the inner
// type, a 16-byte AEAD tag; requests are longer, key updates 22).
func isTLSAlert(h []byte) bool {
	switch {
	case len(h) >= 1 && h[0] == tlsRecordAlert:
		return true
	case len(h) >= 5 && h[0] == 23:
		return int(h[3])<<8|int(h[4]) == 19
	}
	return false
}

// PeerGone peeks at a caller's connection without blocking or consuming:
// true when the caller closed it (EOF), reset it, it was closed here, or,
// on TLS, its next record is an alert (close_notify). A pipelined request
// (data) counts as alive.
func PeerGone(c net.Conn, isTLS bool) bool {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		var b [5]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN:
		case err != nil, n == 0:
			gone = true
		case isTLS:
			gone = isTLSAlert(b[:n])
		}
	})
	return err != nil || gone
}
