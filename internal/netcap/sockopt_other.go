//go:build !linux

package netcap

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

var errUnsupported = errors.New("transparent mode needs Linux (iptables, SO_MARK, SO_ORIGINAL_DST)")

// MarkControl fails: SO_MARK is Linux only.
func MarkControl(int) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return errUnsupported }
}

// OriginalDst fails: SO_ORIGINAL_DST is Linux only.
func OriginalDst(net.Conn) (netip.AddrPort, error) { return netip.AddrPort{}, errUnsupported }
