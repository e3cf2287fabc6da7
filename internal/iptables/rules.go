package iptables

import (
	"fmt"
	"strings"
)

// Our chains in the nat table.
const (
	ChainOutput     = "TRELLIS_OUTPUT"     // jumped to from OUTPUT: outbound decisions
	ChainRedirect   = "TRELLIS_REDIRECT"   // REDIRECT to the outbound capture port
	ChainPrerouting = "TRELLIS_PREROUTING" // jumped to from PREROUTING: inbound decisions
	ChainInbound    = "TRELLIS_INBOUND"    // REDIRECT to the inbound port
)

var ourChains = []string{ChainOutput, ChainRedirect, ChainPrerouting, ChainInbound}

func isOurChain(name string) bool {
	for _, c := range ourChains {
		if c == name {
			return true
		}
	}
	return false
}

// jump is a rule in a built-in chain sending packets to one of ours.
type jump struct {
	chain string
	spec  []string // rule spec after the chain name
}

// jumps are the rules Apply adds to the built-in chains. All of OUTPUT goes
// to our chain, not only TCP, because DNS capture needs UDP.
var jumps = []jump{
	{"OUTPUT", []string{"-j", ChainOutput}},
	{"PREROUTING", []string{"-p", "tcp", "-j", ChainPrerouting}},
}

type family int

const (
	ipv4 family = iota
	ipv6
)

func (f family) String() string {
	if f == ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Rules returns the iptables-restore input (nat table) that Apply installs
// in a namespace without our rules: v4 for iptables-restore and, when
// cfg.IPv6, v6 for ip6tables-restore (else ""). It is meant for
// `iptables-restore --noflush`, which creates or flushes our chains and
// leaves every other chain alone.
func Rules(cfg Config) (v4, v6 string, err error) {
	if err := cfg.Validate(); err != nil {
		return "", "", err
	}
	cfg = cfg.withDefaults()
	v4 = restoreInput(cfg, ipv4, jumps)
	if cfg.IPv6 {
		v6 = restoreInput(cfg, ipv6, jumps)
	}
	return v4, v6, nil
}

// restoreInput renders our chains for f, plus the given jumps. cfg is
// valid and has its defaults.
func restoreInput(cfg Config, f family, add []jump) string {
	var b strings.Builder
	rule := func(chain string, spec ...string) {
		b.WriteString("-A " + chain + " " + strings.Join(spec, " ") + "\n")
	}
	port := func(p uint16) string { return fmt.Sprint(p) }

	b.WriteString("*nat\n")
	for _, c := range ourChains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	rule(ChainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(cfg.OutboundPort))
	rule(ChainInbound, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(cfg.InboundPort))

	// Outbound. The proxy's own sockets first: they carry the mark even when
	// the proxy runs as the application's user.
	rule(ChainOutput, "-m", "mark", "--mark", fmt.Sprintf("%#x", cfg.ProxyMark), "-j", "RETURN")
	if cfg.ProxyUID != nil {
		rule(ChainOutput, "-m", "owner", "--uid-owner", fmt.Sprint(*cfg.ProxyUID), "-j", "RETURN")
	}
	if cfg.ProxyGID != nil {
		rule(ChainOutput, "-m", "owner", "--gid-owner", fmt.Sprint(*cfg.ProxyGID), "-j", "RETURN")
	}
	// The application calling something on loopback (itself, a local
	// agent) is not mesh traffic; DNS to a loopback resolver still is.
	loopback := "127.0.0.0/8"
	if f == ipv6 {
		loopback = "::1/128"
	}
	dns := cfg.dnsCapture()
	if dns {
		rule(ChainOutput, "-o", "lo", "-d", loopback, "-p", "tcp", "!", "--dport", "53", "-j", "RETURN")
	} else {
		rule(ChainOutput, "-o", "lo", "-d", loopback, "-j", "RETURN")
	}
	for _, p := range cfg.ExcludeOutboundCIDRs {
		if p.Addr().Unmap().Is4() != (f == ipv4) {
			continue
		}
		rule(ChainOutput, "-d", p.Masked().String(), "-j", "RETURN")
	}
	for _, p := range cfg.ExcludeOutboundPorts {
		rule(ChainOutput, "-p", "tcp", "--dport", port(p), "-j", "RETURN")
	}
	if dns {
		rule(ChainOutput, "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", port(cfg.DNSPort))
		rule(ChainOutput, "-p", "tcp", "--dport", "53", "-j", "REDIRECT", "--to-ports", port(cfg.DNSPort))
	}
	rule(ChainOutput, "-p", "tcp", "-j", ChainRedirect)

	// Inbound. Connections from this namespace to itself go through OUTPUT
	// and never reach these rules; -i lo says so explicitly.
	rule(ChainPrerouting, "-i", "lo", "-j", "RETURN")
	rule(ChainPrerouting, "-p", "tcp", "--dport", fmt.Sprintf("%d:%d", ReservedPortFirst, ReservedPortLast), "-j", "RETURN")
	for _, p := range cfg.proxyPorts() {
		if p < ReservedPortFirst || p > ReservedPortLast {
			rule(ChainPrerouting, "-p", "tcp", "--dport", port(p), "-j", "RETURN")
		}
	}
	for _, p := range cfg.ExcludeInboundPorts {
		rule(ChainPrerouting, "-p", "tcp", "--dport", port(p), "-j", "RETURN")
	}
	if len(cfg.InboundPorts) == 0 {
		rule(ChainPrerouting, "-p", "tcp", "-j", ChainInbound)
	}
	for _, p := range cfg.InboundPorts {
		rule(ChainPrerouting, "-p", "tcp", "--dport", port(p), "-j", ChainInbound)
	}

	for _, j := range add {
		rule(j.chain, j.spec...)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
