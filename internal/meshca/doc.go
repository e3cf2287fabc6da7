// Package meshca is the mesh certificate authority: the root(s) and signing
// intermediate kept in the control plane's data dir (or the user's own
// intermediate), leaf signing from CSRs, serving certificates for the
// control plane, and root rotation with overlap (see rotate.go and
// docs/identity.md).
//
// Only the control plane (and tests) may import it: proxies, collectors,
// the policy engine and the CLI must never link the signer.
// internal/deptest fails when the data plane depends on it. It depends on
// internal/identity and the standard library only.
package meshca
