// Package admission is the inbound admission chain: the checks every
// inbound HTTP request passes before the app, whatever transport carries
// it (the HTTP/1.1 fast path, net/http over HTTP/1.x or HTTP/2). It holds
// the transport-neutral request View and its two implementations, the
// screen (method case, framing look-alikes, identity headers only the
// proxy may set, Upgrade), path canonicalization (policy.CanonicalPath),
// and authorization: the Authorizer contract and PolicyAuthorizer, which
// decides with the policy engine and emits audit events. A new inbound
// step (end-user JWT, external authorization, rate limits) is one more
// entry in the chain's steps.
//
// It must not depend on the data path's transports and listeners
// (internal/dataplane), the proxy role, the control plane, the CA or
// join-token signer, or the store (internal/deptest keeps this).
package admission
