package proxy

import (
	"net"
	"net/netip"

	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// SetOrigDst makes the proxy's capture listener take each connection's
// original destination from f instead of SO_ORIGINAL_DST, standing in for
// the iptables rules; call it before Start. Test builds only.
func (p *Proxy) SetOrigDst(f func(net.Conn) (netip.AddrPort, error)) { p.origDst = f }

// CurrentSnapshot is the config the proxy runs, nil before the first.
func (p *Proxy) CurrentSnapshot() *meshconfig.Snapshot { return p.snapshot() }

// MetricsForTest are the proxy's data path metrics.
func (p *Proxy) MetricsForTest() *metrics.Metrics { return p.metrics }
