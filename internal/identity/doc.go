// Package identity is Trellis's workload identity system: SPIFFE IDs, the
// mesh certificate authority (roots, intermediate, leaf signing from CSRs,
// root rotation with overlap) and join tokens (ES256 JWTs that entitle a
// proxy to exactly one identity).
//
// The control plane imports all of it. Proxies may import the SPIFFE ID
// helpers but must not need the CA signer or token signing key; those live
// behind types only the control plane constructs.
package identity
