// Package controlplane is `trellis control`: it owns desired state in a
// store, runs the mesh CA and the join-token authority, serves the identity
// gRPC API and the config stream (registry, snapshot builder, push) to
// proxies, and the HTTP admin API to the CLI.
//
// A Server is self-contained (no process-global state), so tests run several
// in one process. Only the CLI wiring and tests import this package; the proxy
// must never depend on it (it carries the CA signer).
package controlplane
