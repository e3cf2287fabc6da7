// Package analysis answers questions about a mesh's authorization policies
// away from any proxy: what one request would get, decided as the called
// service's proxy would (WhatIf, behind `trellis policy check`), and which
// lint findings concern policies about to join the mesh's (LintChanges,
// behind `trellis policy lint -f`; Lint for the mesh's policies alone).
//
// Both take the mesh's state as a value (Mesh): the caller reads it, the
// command line from the control plane's admin API. Results state facts;
// wording them for a user (flags to pass, notes) is the caller's.
//
// It depends only on internal/policy and internal/resource. It must not
// depend on internal/identity, the admin API client, the control plane, the
// store or the signers (internal/deptest keeps this): it decides from what
// it is given and does no I/O. The CLI imports it.
package analysis
