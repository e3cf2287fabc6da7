// Package meshhealth judges a mesh's health from what its control plane's
// admin API answers, as `trellis check` reports it: the control plane's
// readiness, the CA's expiry and rotation, every proxy's sync state and
// workload certificate, and policies that select no registered workload.
// Each finding is OK, WARN or FAIL; Run gathers them into a Report.
//
// It reads through Source, which *adminapi.Client satisfies, and depends
// on internal/adminapi (its types and errors), internal/policy and
// internal/resource. It must not depend on the control plane, the store or
// the signers (internal/deptest keeps this): it judges answers, wherever
// they come from. The CLI imports it.
package meshhealth
