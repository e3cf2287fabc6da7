// Package jointoken issues and verifies join tokens: ES256 JWTs, signed with
// a key kept in the control plane's data dir, that entitle their bearer to
// exactly one workload identity at its first certificate request.
//
// Only the control plane (and tests) may import it: a proxy or collector
// carries its token as an opaque string and never needs the signing key.
// internal/deptest fails when the data plane depends on it. It depends on
// internal/identity only.
package jointoken
