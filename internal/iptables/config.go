package iptables

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/trellismesh/trellis/internal/netcap"
)

// Default ports of the proxy's transparent listeners.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultDNSPort      = 15053
)

// Reserved inbound ports: the proxy's own listeners live in this range and
// traffic to it is never redirected inbound.
const (
	ReservedPortFirst = 15000
	ReservedPortLast  = 15099
)

// Backend picks the iptables binaries.
type Backend string

const (
	// BackendAuto uses whatever iptables, iptables-save and
	// iptables-restore resolve to in PATH (on Debian, the alternatives
	// system picks nf_tables or legacy).
	BackendAuto Backend = ""
	// BackendLegacy uses iptables-legacy and friends.
	BackendLegacy Backend = "legacy"
	// BackendNFT uses iptables-nft and friends.
	BackendNFT Backend = "nft"
)

// Config describes the capture rules. The zero value captures all outbound
// and inbound TCP with the default ports and the proxy mark, without DNS
// capture (set DNSPort, e.g. to DefaultDNSPort) and IPv4 only.
type Config struct {
	// OutboundPort is where captured outbound TCP goes (0: 15001).
	OutboundPort uint16
	// InboundPort is where captured inbound TCP goes: the proxy's mTLS
	// inbound listener (0: 15006).
	InboundPort uint16
	// DNSPort is where the workload's DNS queries (UDP and TCP port 53) go;
	// 0 disables DNS capture.
	DNSPort uint16
	// ProxyMark is the SO_MARK on the proxy's own sockets, whose packets are
	// never captured (0: netcap.ProxyMark).
	ProxyMark uint32
	// ProxyUID and ProxyGID, when set, also exclude every socket owned by
	// that user or group: useful when the proxy runs as its own user and
	// cannot set SO_MARK (it lacks CAP_NET_ADMIN).
	ProxyUID, ProxyGID *int
	// InboundPorts are the application ports whose inbound TCP is captured;
	// empty captures all inbound TCP except the excluded ports.
	InboundPorts []uint16
	// ExcludeInboundPorts are never captured inbound. The reserved range
	// 15000-15099 (the proxy's own listeners) and the three ports above are
	// always excluded.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are never captured outbound (TCP); excluding 53
	// also turns DNS capture off.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destinations never captured, e.g. the control
	// plane and the collector when the proxy cannot mark its sockets. IPv6
	// prefixes need IPv6.
	ExcludeOutboundCIDRs []netip.Prefix
	// IPv6 also installs the rules with ip6tables, when the kernel and the
	// binary support it (otherwise Apply logs why and carries on with IPv4).
	IPv6 bool
	// Backend picks the iptables binaries (default: whatever iptables is).
	Backend Backend
	// Netns, when set, runs every command in that named network namespace
	// (`ip netns exec NETNS ...`) instead of the current one.
	Netns string
	// Logger receives what Apply and Remove did and skipped (nil: discard).
	Logger *slog.Logger
}

// FieldError is a Config field with a bad value.
type FieldError struct {
	Field  string // Config field name, e.g. "InboundPorts"
	Value  any
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("iptables config: %s %v: %s", e.Field, e.Value, e.Reason)
}

// withDefaults fills in the documented defaults of zero fields.
func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.ProxyMark == 0 {
		c.ProxyMark = netcap.ProxyMark
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first bad field as a *FieldError.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.InboundPort == c.OutboundPort {
		return &FieldError{"InboundPort", c.InboundPort, "must differ from the outbound port"}
	}
	if c.DNSPort != 0 && (c.DNSPort == c.OutboundPort || c.DNSPort == c.InboundPort) {
		return &FieldError{"DNSPort", c.DNSPort, "must differ from the outbound and inbound ports"}
	}
	if c.ProxyUID != nil && *c.ProxyUID < 0 {
		return &FieldError{"ProxyUID", *c.ProxyUID, "must be 0 or more"}
	}
	if c.ProxyGID != nil && *c.ProxyGID < 0 {
		return &FieldError{"ProxyGID", *c.ProxyGID, "must be 0 or more"}
	}
	for _, list := range []struct {
		field string
		ports []uint16
	}{{"InboundPorts", c.InboundPorts}, {"ExcludeInboundPorts", c.ExcludeInboundPorts}, {"ExcludeOutboundPorts", c.ExcludeOutboundPorts}} {
		for _, p := range list.ports {
			if p == 0 {
				return &FieldError{list.field, p, "ports are 1-65535"}
			}
		}
	}
	for _, p := range c.InboundPorts {
		if reason := c.inboundExclusion(p); reason != "" {
			return &FieldError{"InboundPorts", p, "never captured: " + reason}
		}
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return &FieldError{"ExcludeOutboundCIDRs", p, "not a valid prefix"}
		}
		if !p.Addr().Unmap().Is4() && !c.IPv6 {
			return &FieldError{"ExcludeOutboundCIDRs", p, "is IPv6 and IPv6 capture is off; turn it on or drop the prefix"}
		}
	}
	switch c.Backend {
	case BackendAuto, BackendLegacy, BackendNFT:
	default:
		return &FieldError{"Backend", c.Backend, `want "" (auto), "legacy" or "nft"`}
	}
	return nil
}

// inboundExclusion says why inbound traffic to port p is never captured,
// or "" (c has its defaults).
func (c Config) inboundExclusion(p uint16) string {
	if p >= ReservedPortFirst && p <= ReservedPortLast {
		return fmt.Sprintf("%d-%d are reserved for the proxy's own listeners", ReservedPortFirst, ReservedPortLast)
	}
	for _, x := range c.proxyPorts() {
		if p == x {
			return "it is one of the proxy's own ports"
		}
	}
	for _, x := range c.ExcludeInboundPorts {
		if p == x {
			return "it is also an excluded inbound port"
		}
	}
	return ""
}

// proxyPorts are the proxy's own listening ports (c has its defaults).
func (c Config) proxyPorts() []uint16 {
	ports := []uint16{c.OutboundPort, c.InboundPort}
	if c.DNSPort != 0 {
		ports = append(ports, c.DNSPort)
	}
	return ports
}

// dnsCapture reports whether DNS is captured: a DNS port is set and port 53
// is not excluded.
func (c Config) dnsCapture() bool {
	if c.DNSPort == 0 {
		return false
	}
	for _, p := range c.ExcludeOutboundPorts {
		if p == 53 {
			return false
		}
	}
	return true
}
