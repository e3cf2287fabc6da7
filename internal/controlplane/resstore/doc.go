// Package resstore holds the control plane's user resources (Mesh,
// AuthorizationPolicy, ...): Resources applies, plans, gets, lists and
// deletes them in the store.Store it is given (canonical JSON under
// /resources/, resourceVersion = the key's ModRevision), or passes the
// admin API's writes to an external Source that is a Writer (Kubernetes
// mode: the custom resources) and refuses them otherwise (ErrExternal).
// Cache is the decoded view the snapshot builder works from (the Mesh
// settings and the policies), kept current by watching the store or by
// following the external Source.
//
// Errors wrap adminapi.ErrNotFound, ErrConflict, ErrForbidden or
// ErrExternal, or are an *adminapi.ObjectError; the control plane's admin
// API maps them to HTTP statuses. Only the control plane (and tests)
// import it. It must not depend on the control plane's server
// (internal/controlplane), the proxy registry, the VIP allocator, the join
// tokens, the signers, a store backend or the data plane: internal/deptest
// keeps that.
package resstore
