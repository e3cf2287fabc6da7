// Package meshca is the mesh certificate authority: the root(s) and signing
// intermediate kept in the control plane's data dir (or the user's own
// intermediate), leaf signing from CSRs, the control plane's serving
// certificate (ServingCert: reissued at half life and after a rotation,
// with the TLS configs that verify clients against the current bundle),
// and root rotation with overlap: the CA's generations (rotate.go) and the
// rollout across the proxies, which refuses to retire an old root while a
// proxy reports depending on it (Rollout, rollout.go; docs/identity.md).
//
// Only the control plane (and tests) may import it: proxies, collectors,
// the policy engine and the CLI must never link the signer.
// internal/deptest fails when the data plane depends on it. It depends on
// internal/identity, internal/atomicfile, internal/adminapi (the CA status
// it reports) and the standard library only: never on the control plane
// or its registry, whose proxies' reports it is given (ProxyCert).
package meshca
