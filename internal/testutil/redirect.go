package testutil

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Redirector stands in for transparent mode's iptables rules in tests of a
// capture listener: it hands every connection a loopback source address of
// its own (127.77.x.y) and remembers the destination the app meant for it;
// OrigDst (the listener's CaptureConfig.OriginalDst) reports it. A
// connection from any other source reports its own local address, as
// SO_ORIGINAL_DST does for a connection that was not redirected.
type Redirector struct {
	mu   sync.Mutex
	n    int
	dsts map[netip.Addr]netip.AddrPort
}

// NewRedirector skips the test off Linux, where transparent mode does not
// exist.
func NewRedirector(t testing.TB) *Redirector {
	if runtime.GOOS != "linux" {
		t.Skip("transparent mode is Linux only (SO_ORIGINAL_DST, SO_MARK)")
	}
	return &Redirector{dsts: map[netip.Addr]netip.AddrPort{}}
}

// OrigDst is the destination c's app meant.
func (r *Redirector) OrigDst(c net.Conn) (netip.AddrPort, error) {
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	r.mu.Lock()
	dst, ok := r.dsts[src]
	r.mu.Unlock()
	if ok {
		return dst, nil
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), nil
}

// Dial connects to the capture listener at capture as if the app had
// dialed dst and the rules had redirected it.
func (r *Redirector) Dial(ctx context.Context, capture string, dst netip.AddrPort) (net.Conn, error) {
	r.mu.Lock()
	r.n++
	src := netip.AddrFrom4([4]byte{127, 77, byte(r.n / 250), byte(1 + r.n%250)})
	r.dsts[src] = dst
	r.mu.Unlock()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", capture)
}

// MustDial is Dial, failing t on error, with a 10 s deadline.
func (r *Redirector) MustDial(t testing.TB, capture string, dst netip.AddrPort) net.Conn {
	t.Helper()
	c, err := r.Dial(context.Background(), capture, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// Client is an HTTP client whose every connection is captured on its way
// to dst; h2c speaks HTTP/2 with prior knowledge (as gRPC apps do).
func (r *Redirector) Client(t testing.TB, capture string, dst netip.AddrPort, h2c bool) *http.Client {
	var p http.Protocols
	p.SetHTTP1(!h2c)
	p.SetUnencryptedHTTP2(h2c)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return r.Dial(ctx, capture, dst)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
