// Package identity is what every Trellis role needs to know about workload
// identity, and nothing that can mint one: SPIFFE IDs of workloads and of
// the system accounts (control plane, collector), PEM and key file helpers,
// and VerifySVID, the one check every mTLS peer of the mesh goes through
// (SystemServerTLS applies it to clients of the control plane and
// collectors).
//
// Any package may import it. It must stay free of signing: the CA and its
// rotation live in internal/meshca, join tokens in internal/jointoken, the
// workload certificate manager in internal/workloadcert. It must not import
// any other internal package (internal/deptest keeps this).
package identity
