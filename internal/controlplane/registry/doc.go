// Package registry is the control plane's proxy registry: one record per
// proxy instance that is connected or within its endpoint grace period
// (its workload, connect and disconnect, grace and expiry, the services
// left without an instance), the bookkeeping of what each proxy was
// offered, acknowledged, rejected and reports running, the sync states
// derived from it (adminapi.ProxyStates), drift repairs, the certificate
// reports a CA rotation waits on, and the copy saved in the store across
// control plane restarts.
//
// A config stream is an opaque handle to it (Stream): the registry must
// not depend on the control plane (internal/controlplane), its gRPC
// server, the data plane (internal/dataplane, internal/proxy) or the CA
// signer (internal/meshca). internal/deptest keeps that. Only the control
// plane (and tests) import it.
package registry
