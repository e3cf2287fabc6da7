// Package dataplane is a proxy's data path, its transports: the inbound
// side (mTLS listener, TLS/plaintext sniffing, the admission chain every
// request passes, forwarding to the app) and the outbound side (explicit
// upstream listeners, the HTTP proxy port, routing of captured
// connections), the HTTP/1.1 fast path and its handoff to net/http, peer
// endpoints and load balancing, TCP tunnels. It reads the compiled config
// (internal/meshconfig). Its parts are packages below it: admission (the
// inbound chain and the authorizers over the policy engine), mtls,
// upstream, relay, connset, capture, limits and metrics; they never import
// it.
//
// It must not depend on the proxy role (internal/proxy), the control
// plane, the CA or join-token signer, or the store (internal/deptest
// keeps this).
package dataplane
