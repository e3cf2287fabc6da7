// Package adminview draws what a control plane's admin API answers as text
// for people: the tables and detail views of `trellis status` (proxies'
// config sync state, certificate expiry, one proxy's config diff), `trellis
// get` (resources, registered workloads and services), `trellis top` (the
// service graph) and `trellis ca status`. Each view is a function of the
// answer and, where it shows ages or time left, of now; JSON and YAML
// output, and choosing what to show, stay with the commands.
//
// It depends on internal/adminapi's types and internal/resource only. It
// must not depend on the control plane, the store or the signers
// (internal/deptest keeps this): it draws answers, it does not make them.
// The CLI imports it.
package adminview
