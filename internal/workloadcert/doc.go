// Package workloadcert keeps a workload's certificate: it makes a fresh key
// and CSR, obtains the first certificate from the control plane's Identity
// service with a join token, renews it at about half its life (or at once
// after a CA rotation) presenting the current one, and swaps it in
// atomically. Every role that needs a workload certificate uses it: the
// proxy and the standalone collector.
//
// It talks to the control plane only over the Identity gRPC API (verified
// with identity.SystemServerTLS): it must not import internal/meshca,
// internal/jointoken, internal/controlplane, internal/store or any role
// package (internal/deptest keeps this).
package workloadcert
