// Package iptables installs and removes the nat-table rules of transparent
// mode: the workload's outbound TCP (and DNS) is redirected to the proxy's
// capture ports and inbound TCP for the application's ports to the proxy's
// inbound listener, in chains of our own (TRELLIS_*) so that apply is
// idempotent and remove touches nothing else.
//
// It drives the iptables binaries (iptables-restore, iptables-save,
// iptables -C) as istio-init does, legacy or nf_tables, rather than talking
// netlink itself. Imported by the CLI (trellis iptables, trellis proxy
// --transparent) and the test harness; it must not import the proxy.
package iptables
