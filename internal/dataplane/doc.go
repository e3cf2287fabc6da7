// Package dataplane is a proxy's data path: the inbound side (mTLS
// listener, the admission chain every request passes, forwarding to the
// app) and the outbound side (explicit upstream listeners, the HTTP proxy
// port, transparent capture), the HTTP/1.1 fast path and its handoff to
// net/http, connection pools, load balancing, TCP tunnels, limits and the
// data-path metrics. It reads the compiled config (internal/meshconfig)
// and decides with the policy engine (internal/policy).
//
// It must not depend on the proxy role (internal/proxy), the control
// plane, the CA or join-token signer, or the store (internal/deptest
// keeps this).
package dataplane
