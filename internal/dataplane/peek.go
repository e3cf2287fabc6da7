package dataplane

import (
	"io"
	"net"
)

// tlsRecordHandshake is the first byte of every TLS connection (a
// handshake record); no HTTP method or h2c preface starts with it.
const tlsRecordHandshake = 0x16

// prefixConn is a net.Conn whose first byte was read to sniff the protocol
// and is replayed before the rest.
type prefixConn struct {
	net.Conn
	first   byte
	pending bool
}

// peekByte reads one byte from c and returns it with a conn that replays it.
// The caller sets a read deadline first.
func peekByte(c net.Conn) (byte, *prefixConn, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, nil, err
	}
	return b[0], &prefixConn{Conn: c, first: b[0], pending: true}, nil
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.pending {
		if len(p) == 0 {
			return 0, nil
		}
		p[0] = c.first
		c.pending = false
		return 1, nil
	}
	return c.Conn.Read(p)
}

// NetConn exposes the socket for half-closing.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }
