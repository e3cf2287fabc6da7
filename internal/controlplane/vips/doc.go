// Package vips assigns services their virtual IPs: every service in the
// proxy registry gets an address from the control plane's --vip-range
// (Config.VIPRange), which mesh DNS answers SERVICE.NAMESPACE.mesh with
// and transparent capture routes by. The push loop assigns them before
// each snapshot build (Allocator.Assign); the snapshot builder only copies
// what it is given.
//
// An assignment is kept forever: it survives restarts and the service's
// workloads all going away, so a service that comes back gets its old
// address and an application (or a resolver's cache) holding it is never
// sent to another service. The price is that a range only ever fills up;
// when it is full, new services get no VIP (logged) until the range is
// made larger. Assignments live in the store.Store it is given, written so
// that control planes sharing a store never disagree (vips.go).
//
// Only the control plane imports it. It must not depend on the control
// plane itself, the proxy registry, the signers, a store backend or the
// data plane: internal/deptest keeps that.
package vips
