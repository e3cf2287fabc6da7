// Package proxy is `trellis proxy`, the sidecar: it obtains a workload
// certificate, subscribes to its configuration snapshot, and carries the
// workload's traffic: inbound mTLS (15006), explicit outbound listeners and
// an HTTP forward proxy (15001), and an admin endpoint (15000).
//
// Configuration is compiled from a snapshot into an immutable Snapshot value
// and swapped in atomically; the data path reads it per request and never
// mutates it. Peers are verified with identity.VerifySVID; the workload
// certificate comes from internal/workloadcert.
//
// The proxy must not depend on the control plane, the CA signer
// (internal/meshca), the join-token signer, the store, bbolt, client-go or
// another role such as internal/collectord (internal/deptest keeps this).
package proxy
