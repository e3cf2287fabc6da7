package proxy

import (
	"net"
	"net/netip"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// WithOrigDst makes a capture listener take each connection's original
// destination from f instead of SO_ORIGINAL_DST, standing in for the
// iptables rules. Test builds only.
func (c CaptureConfig) WithOrigDst(f func(net.Conn) (netip.AddrPort, error)) CaptureConfig {
	c.origDst = f
	return c
}

// SetOrigDst does the same for a proxy's capture listener; call it before
// Start.
func (p *Proxy) SetOrigDst(f func(net.Conn) (netip.AddrPort, error)) { p.origDst = f }

// CurrentSnapshot is the config the proxy runs, nil before the first.
func (p *Proxy) CurrentSnapshot() *meshconfig.Snapshot { return p.snapshot() }

// MetricsForTest are the proxy's data path metrics.
func (p *Proxy) MetricsForTest() *Metrics { return p.metrics }
