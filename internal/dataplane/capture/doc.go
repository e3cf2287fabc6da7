// Package capture is transparent mode's outbound capture, apart from
// routing: the iptables rules (internal/iptables) redirect the workload's
// outbound TCP to the capture listener, and this package recovers each
// connection's original destination, refuses connections to the listener
// itself, detects HTTP from the first bytes (or a server-first port),
// reads the host a connection names (SniffHost: a TLS ClientHello's SNI,
// an HTTP request's Host) for egress control, relays connections to
// destinations outside the mesh (passthrough, replaying bytes already
// read) and counts the results. The data path (internal/dataplane) routes what it
// classifies: a service's virtual IP to that service, anything else by
// the mesh's outbound mode.
//
// It must not depend on the data path's transports (internal/dataplane),
// the proxy role, the control plane, or the store (internal/deptest keeps
// this).
package capture
