// Package policy is the authorization policy engine shared by the proxy
// (enforcement), the control plane (validation, per-workload sets) and the
// CLI (policy check/lint).
//
// Compile turns AuthorizationPolicy objects into an Engine: an immutable
// value, built once per configuration version, that decides a request
// without allocating and without looking at policies that cannot select the
// called workload. Decide and DecideAudit are safe for concurrent use.
// Lint finds policies and rules that cannot do what their author meant.
//
// The semantics, including the table of edge cases (every row of which is a
// test in this package), are in docs/policy.md. In short: DENY policies are
// evaluated first; a request is allowed if no enforced DENY matches and
// either an enforced ALLOW matches or no enforced ALLOW selects the workload
// and the mesh default is allow. A condition on an attribute the request does
// not carry (no caller identity, no HTTP on a TCP connection, no such
// header) never helps a request in: it fails in an ALLOW rule, and in a
// DENY rule the not-lists and the HTTP conditions on TCP hold.
//
// Any role may import this package: it depends only on the standard
// library and internal/resource. It must not depend on internal/identity,
// the CA (internal/meshca), join tokens, the store or any role package
// (internal/deptest keeps this).
package policy
