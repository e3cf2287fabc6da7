// Package proxy is `trellis proxy`, the sidecar: it obtains a workload
// certificate, subscribes to its configuration snapshot, and carries the
// workload's traffic: inbound mTLS (15006), explicit outbound listeners and
// an HTTP forward proxy (15001), and an admin endpoint (15000).
//
// Configuration is compiled from a snapshot into an immutable Snapshot value
// and swapped in atomically; the data path reads it per request and never
// mutates it. The proxy must not import the control plane or the CA signer.
package proxy
