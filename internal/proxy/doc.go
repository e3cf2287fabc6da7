// Package proxy is `trellis proxy`, the sidecar role: it obtains a workload
// certificate (internal/workloadcert), keeps its config stream to the
// control plane (internal/controlclient), compiles each snapshot
// (internal/meshconfig) and swaps it in atomically, and wires the data path
// (internal/dataplane: inbound mTLS on 15006, explicit outbound listeners
// and the HTTP forward proxy on 15001, transparent capture), mesh DNS
// (internal/meshdns), telemetry and the admin endpoint (15000).
//
// The proxy must not depend on the control plane, the CA signer
// (internal/meshca), the join-token signer, the store, bbolt, client-go or
// another role such as internal/collectord (internal/deptest keeps this).
package proxy
