//go:build !linux

package dataplane

import "net"

// rawIO is the identity where raw socket I/O is not implemented.
func rawIO(c net.Conn) net.Conn { return c }
