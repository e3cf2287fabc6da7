// Package netcap holds the socket-level pieces of transparent capture
// shared by the iptables rules and the proxy: the mark the proxy puts on
// its own sockets (so the rules let them through uncaptured) and the
// recovery of a redirected connection's original destination
// (SO_ORIGINAL_DST). Linux only; elsewhere the functions report that
// transparent mode is unsupported.
//
// It depends on the standard library and golang.org/x/sys only: the data
// plane, mesh DNS and the iptables rules share it.
package netcap

// ProxyMark is the SO_MARK (fwmark) the proxy sets on every socket it
// opens in transparent mode: the iptables rules return early for packets
// carrying it, so the proxy's own connections (to peers, the control
// plane, the collector, upstream DNS) are never captured, even when the
// proxy and the application run as the same user.
const ProxyMark = 0x1a5
