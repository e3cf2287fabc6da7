//go:build !unix

package upstream

import "net"

// connAlive cannot peek without blocking here; a dead connection is
// caught by the replay of a failed exchange instead.
func connAlive(net.Conn) bool { return true }

// PeerGone cannot peek without blocking here: a caller that went away is
// noticed when its response is written.
func PeerGone(net.Conn, bool) bool { return false }
