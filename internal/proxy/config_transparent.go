package proxy

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/netcap"
)

// Defaults of the transparent mode's Config fields.
const (
	DefaultOutboundCaptureAddr = "0.0.0.0:15001"
	// DefaultTransparentDNSAddr is where `trellis proxy --transparent`
	// serves mesh DNS unless --dns-addr says otherwise (the capture rules
	// send the workload's port-53 queries there).
	DefaultTransparentDNSAddr = "127.0.0.1:15053"
)

// setTransparentDefaults fills the transparent mode's zero values. The
// HTTP proxy's default address shares the capture listener's port, so it
// is turned off unless another address was asked for.
func (c *Config) setTransparentDefaults() {
	if c.OutboundCaptureAddr == "" {
		c.OutboundCaptureAddr = DefaultOutboundCaptureAddr
	}
	if c.ProtocolDetectTimeout == 0 {
		c.ProtocolDetectTimeout = capture.DefaultProtocolDetectTimeout
	}
	if c.Transparent && c.HTTPProxyAddr == DefaultHTTPProxyAddr {
		c.HTTPProxyAddr = "off"
	}
}

func (c *Config) validateTransparent() error {
	if !c.Transparent {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.OutboundCaptureAddr); err != nil {
		return fmt.Errorf("--outbound-capture-addr %q: want HOST:PORT", c.OutboundCaptureAddr)
	}
	if c.ProtocolDetectTimeout < 0 {
		return fmt.Errorf("--protocol-detect-timeout %v: want a positive duration, e.g. 100ms", c.ProtocolDetectTimeout)
	}
	if err := CheckMark(); err != nil {
		return fmt.Errorf("--transparent: %w; run the proxy with CAP_NET_ADMIN", err)
	}
	return nil
}

// CheckMark reports whether this process may set SO_MARK (CAP_NET_ADMIN),
// which transparent mode needs on every socket it opens.
func CheckMark() error {
	lc := net.ListenConfig{Control: netcap.MarkControl(netcap.ProxyMark)}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	return l.Close()
}

// socketControl is the Control func of the proxy's sockets: SO_MARK in
// transparent mode, nil otherwise.
func (c *Config) socketControl() func(network, address string, rc syscall.RawConn) error {
	if !c.Transparent {
		return nil
	}
	return netcap.MarkControl(netcap.ProxyMark)
}

// dialer is a dialer for the proxy's own connections (control plane,
// collector): marked in transparent mode.
func (c *Config) dialer() *net.Dialer { return &net.Dialer{Control: c.socketControl()} }

// contextDialer is the gRPC dialer of the proxy's own connections; nil
// (gRPC's default) outside transparent mode.
func (c *Config) contextDialer() func(ctx context.Context, addr string) (net.Conn, error) {
	if !c.Transparent {
		return nil
	}
	d := c.dialer()
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}
