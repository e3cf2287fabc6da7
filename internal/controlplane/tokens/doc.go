// Package tokens is the control plane's join-token service: Service
// issues join tokens (signed by the internal/jointoken authority it is
// given) and records each one, never the token itself, in Records (by
// default the store.Store, under /tokens/<id>; Kubernetes mode:
// ConfigMaps, internal/kube/tokenrecords), so tokens can be listed and
// revoked; it verifies a presented token against its record and decides
// whether an identity is still entitled to a service (Entitled), which
// the identity service and the config stream ask before certifying or
// registering a workload.
//
// Errors wrap adminapi.ErrNotFound or ErrConflict, ErrRevoked, or are a
// *FieldError (a bad request field); the control plane maps them to HTTP
// statuses and gRPC codes. Only the control plane (and tests) import it. It
// must not depend on the control plane's server (internal/controlplane),
// the proxy registry, the VIP allocator, the resource store, the CA signer
// (internal/meshca), a store backend or the data plane: internal/deptest
// keeps that.
package tokens
