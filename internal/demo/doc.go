// Package demo is `trellis up`: a whole mesh on one machine, in one
// process — a control plane on a temporary data dir, three small demo
// services (frontend calling catalog and payments in namespace shop), a
// sidecar proxy beside each, the policies for exactly those calls, and a
// light traffic generator. Only the CLI imports it.
//
// It must not be imported by any role or shared package.
package demo
