// Package controlplane is `trellis control`: it keeps desired state in the
// store.Store it is given (Config.Store; it never opens or closes one and
// must not import a backend such as store/bolt), runs the mesh CA
// (internal/meshca) and the join-token authority (internal/jointoken),
// serves the identity gRPC API and the config stream to proxies (the push
// loop; the proxy registry is internal/controlplane/registry, the snapshot
// builder internal/controlplane/snapshot, services' virtual IPs
// internal/controlplane/vips), and the HTTP admin API to the CLI. The user
// resources and their decoded cache are internal/controlplane/resstore,
// the join tokens' issue, records and checks internal/controlplane/tokens.
//
// A Server is self-contained (no process-global state), so tests run several
// in one process. Only the CLI wiring and tests import this package; the proxy
// must never depend on it (it carries the CA signer), and it must not import
// another role (internal/proxy, internal/collectord): internal/deptest keeps
// both.
package controlplane
