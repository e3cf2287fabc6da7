// Package collectord runs a standalone telemetry collector (`trellis
// collector`): the durable hash-chained event log, the Telemetry gRPC
// service proxies and the control plane stream to over mTLS, delivery to
// --audit-sink URLs, mesh-wide metrics and the service graph on an admin
// API. It joins the mesh like a proxy: with a join token for
// spiffe://<td>/ns/trellis-system/sa/collector it obtains (and renews) a
// certificate from the control plane (internal/workloadcert), and it
// accepts only peers that identity.VerifySVID accepts against the mesh
// roots. The control plane, started with --collector-addr, tells proxies to
// use it.
//
// It must not import another role (internal/proxy, internal/controlplane)
// nor the CA or join-token signers (internal/deptest keeps this).
package collectord
