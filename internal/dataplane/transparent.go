package dataplane

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/dataplane/connset"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/netcap"
)

// Transparent mode: iptables rules (internal/iptables) redirect the
// workload's outbound TCP to the capture listener, which recovers each
// connection's original destination and routes by it:
//
//	original destination is a service VIP -> that service, as an explicit
//	    upstream listener would (HTTP detected from the first bytes, else
//	    an opaque tunnel)
//	anything else -> MeshConfig.outbound_mode: passthrough (dial the
//	    original destination) or block (reset)
//
// Every socket the proxy opens carries SO_MARK netcap.ProxyMark, which the
// rules let through: without it the proxy would capture its own traffic.

// DefaultProtocolDetectTimeout is CaptureConfig.DetectTimeout's default.
const DefaultProtocolDetectTimeout = 100 * time.Millisecond

// Results of trellis_outbound_captured_total.
const (
	capturedMesh        = "mesh"
	capturedPassthrough = "passthrough"
	capturedBlocked     = "blocked"
	capturedError       = "error"
)

// serverFirstPorts are well-known ports of protocols where the server
// speaks first (FTP, SSH, SMTP and submission, POP3, IMAP, MySQL) or that
// start with TLS (SMTPS, IMAPS, POP3S): a connection to a mesh service on
// one of them is an opaque tunnel at once instead of waiting out protocol
// detection. PostgreSQL (5432) and Redis (6379) are client-first and not
// listed: detection sees their first bytes at once anyway.
var serverFirstPorts = map[uint16]bool{
	21: true, 22: true, 25: true, 110: true, 143: true, 465: true, 587: true, 993: true, 995: true, 3306: true,
}

// passthroughDialTimeout bounds connecting to a non-mesh destination: the
// app's own connect already succeeded (to the proxy), so this is the
// connect timeout it effectively gets.
const passthroughDialTimeout = 10 * time.Second

// maxSniff bounds the bytes read to find an HTTP/1 request line; a longer
// line that still looks like one is treated as HTTP (the server answers
// it with an error).
const maxSniff = 8 << 10

// CaptureConfig configures ServeCapture. Zero values mean the documented
// defaults.
type CaptureConfig struct {
	// DetectTimeout bounds the wait for the first bytes of a connection to
	// an HTTP service before it becomes an opaque tunnel. Zero means
	// 100ms.
	DetectTimeout time.Duration

	// OriginalDst recovers a connection's original destination; nil means
	// netcap.OriginalDst. Tests set it (export_test) to stand in for the
	// iptables rules.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
}

// ServeCapture serves the transparent mode's outbound capture listener:
// connections the iptables rules redirected there are routed by their
// original destination (see the top of transparent.go). A connection
// whose original destination is the listener itself (dialed directly, not
// redirected) is refused. Passthrough connections are dialed with the data
// path's Control (DataPlaneConfig.Control), which must set the proxy's
// mark, or the rules capture them again. It returns http.ErrServerClosed
// after Shutdown.
func (o *Outbound) ServeCapture(l net.Listener, cfg CaptureConfig) error {
	if cfg.DetectTimeout <= 0 {
		cfg.DetectTimeout = DefaultProtocolDetectTimeout
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = netcap.OriginalDst
	}
	cp := &capture{
		o: o, l: l, cfg: cfg,
		metrics: newCaptureMetrics(o.cfg.Metrics),
		httpLis: connset.NewChanListener(l.Addr()),
		dialer:  &net.Dialer{Timeout: passthroughDialTimeout, Control: o.cfg.Control},
	}
	srv := newHTTPServer(http.HandlerFunc(cp.serveHTTP), o.cfg, true, nil)
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if cc, ok := c.(*capturedConn); ok {
			return context.WithValue(ctx, captureKey{}, cc.key)
		}
		return ctx
	}
	srv.RegisterOnShutdown(func() { closeQuietly(l) })
	if !o.trackServer(srv) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	var served sync.WaitGroup
	served.Go(func() { _ = srv.Serve(cp.httpLis) })
	err := connset.AcceptLoop(l, func(c net.Conn) { go cp.handle(c) })
	closeQuietly(cp.httpLis)
	served.Wait()
	if errors.Is(err, net.ErrClosed) {
		return http.ErrServerClosed
	}
	return err
}

// capture is one ServeCapture loop.
type capture struct {
	o       *Outbound
	l       net.Listener
	cfg     CaptureConfig
	metrics *captureMetrics
	httpLis *connset.ChanListener // HTTP connections, with their service key
	dialer  *net.Dialer           // passthrough
}

type captureKey struct{}

// capturedConn is a connection detected as HTTP, handed to the capture's
// HTTP server with the service its original destination named.
type capturedConn struct {
	net.Conn
	key string
}

// NetConn exposes the socket for half-closing (upgraded connections).
func (c *capturedConn) NetConn() net.Conn { return c.Conn }

func (cp *capture) serveHTTP(w http.ResponseWriter, r *http.Request) {
	key, _ := r.Context().Value(captureKey{}).(string)
	cp.o.serveHTTP(w, r, key, http.StatusServiceUnavailable)
}

// handle routes one captured connection.
func (cp *capture) handle(c net.Conn) {
	o := cp.o
	if !o.conns.Add(c) {
		closeQuietly(c)
		return
	}
	defer o.conns.Remove(c)
	dst, err := cp.cfg.OriginalDst(c)
	if err != nil {
		cp.refuse(c, capturedError, "original destination unknown: only connections the iptables rules redirect belong here", dst, err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if cp.isSelf(c, dst) {
		cp.refuse(c, capturedError, "connection to the capture listener itself: it only takes redirected connections", dst, nil)
		return
	}
	t := o.routes()
	if t == nil {
		cp.refuse(c, capturedError, "no mesh configuration yet", dst, nil)
		return
	}
	if key, ok := t.snap.ServiceByVIP[dst.Addr()]; ok {
		rt := t.routes[key]
		if rt == nil {
			cp.refuse(c, capturedError, "virtual IP of "+key+", which is not in the routing table", dst, nil)
			return
		}
		cp.metrics.captured[capturedMesh].Inc()
		cp.serveMesh(c, dst, rt)
		return
	}
	if t.snap.OutboundMode == meshconfig.OutboundBlock {
		cp.refuse(c, capturedBlocked, "not a mesh service, and the mesh's outbound mode is block", dst, nil)
		return
	}
	cp.passthrough(c, dst)
}

// isSelf: the destination is the capture listener itself. A connection
// that was not redirected reports its own local address as the original
// destination; serving it would dial the listener again, forever.
func (cp *capture) isSelf(c net.Conn, dst netip.AddrPort) bool {
	if local := addrPortOf(c.LocalAddr()); dst == local {
		return true
	}
	if dst.Port() != addrPortOf(cp.l.Addr()).Port() {
		return false
	}
	a := dst.Addr()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// serveMesh serves a connection to a mesh service: a tunnel for tcp
// services and server-first ports, else HTTP when the first bytes say so.
func (cp *capture) serveMesh(c net.Conn, dst netip.AddrPort, rt *route) {
	if rt.tcp || serverFirstPorts[dst.Port()] {
		cp.o.serveTCP(c, rt)
		return
	}
	isHTTP, pc, err := cp.detect(rawIO(c))
	if err != nil {
		closeQuietly(c)
		return
	}
	if !isHTTP {
		// The service's proxy still parses the tunnel as HTTP (HTTP
		// services are authorized per request), so an HTTP client that
		// waited past the timeout still works.
		cp.o.serveTCP(pc, rt)
		return
	}
	// HTTP/1.1 takes the fast path (fastpath.go); it hands anything else
	// (h2c, upgrades, ...) to the capture's HTTP server.
	fast := &fastServer{
		handle:      func(fc *fastConn, req *h1.Head) bool { return cp.o.serveFast(fc, req, rt.key) },
		idleTimeout: cp.o.cfg.IdleTimeout,
		conns:       &cp.o.conns,
		handoff: func(c net.Conn, _ *peer) bool {
			return cp.httpLis.Deliver(&capturedConn{Conn: c, key: rt.key})
		},
	}
	fast.serve(pc, nil)
}

// detect reads c's first bytes, for at most DetectTimeout, until they show
// an HTTP/1.x request line or the HTTP/2 preface (true) or something else
// (false). A timeout is counted and means opaque. The returned conn
// replays what was read; err means c ended before sending anything.
func (cp *capture) detect(c net.Conn) (bool, net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(cp.cfg.DetectTimeout)); err != nil {
		return false, nil, err
	}
	buf := make([]byte, 0, 1024)
	verdict := sniffMore
	var rerr error
	for verdict == sniffMore && rerr == nil {
		if len(buf) == cap(buf) {
			if len(buf) >= maxSniff {
				verdict = sniffHTTP
				break
			}
			buf = slices.Grow(buf, len(buf))
		}
		var n int
		n, rerr = c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		verdict = sniff(buf)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return false, nil, err
	}
	if verdict == sniffMore {
		switch {
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			cp.metrics.detectTimeouts.Inc()
		case len(buf) == 0:
			return false, nil, rerr
		}
	}
	return verdict == sniffHTTP, &peekedConn{Conn: c, buf: buf}, nil
}

type sniffResult int

const (
	sniffMore sniffResult = iota
	sniffHTTP
	sniffOpaque
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxMethod bounds an HTTP method's length (the longest registered ones
// have 17 letters).
const maxMethod = 20

// sniff classifies a connection's first bytes: the HTTP/2 preface, or an
// HTTP/1.x request line (METHOD SP target SP HTTP/1.x CRLF), is HTTP;
// bytes no such line can start with are opaque; a prefix of one needs
// more.
func sniff(b []byte) sniffResult {
	if len(b) == 0 {
		return sniffMore
	}
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return sniffHTTP
		}
		return sniffMore
	}
	i := 0
	for i < len(b) && 'A' <= b[i] && b[i] <= 'Z' {
		i++
	}
	switch {
	case i > maxMethod:
		return sniffOpaque
	case i == len(b):
		return sniffMore
	case i == 0 || b[i] != ' ':
		return sniffOpaque
	}
	j := i + 1
	for j < len(b) && b[j] > ' ' && b[j] != 0x7f {
		j++
	}
	switch {
	case j == len(b):
		return sniffMore
	case j == i+1 || b[j] != ' ':
		return sniffOpaque
	}
	rest := b[j+1:]
	for _, v := range [...]string{"HTTP/1.1\r\n", "HTTP/1.0\r\n"} {
		if n := min(len(rest), len(v)); string(rest[:n]) == v[:n] {
			if n == len(v) {
				return sniffHTTP
			}
			return sniffMore
		}
	}
	return sniffOpaque
}

// peekedConn replays the bytes read for protocol detection before the
// rest of the connection.
type peekedConn struct {
	net.Conn
	buf []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn exposes the socket for half-closing.
func (c *peekedConn) NetConn() net.Conn { return c.Conn }

// passthrough connects c to its original destination, which is no mesh
// service, and relays bytes both ways.
func (cp *capture) passthrough(c net.Conn, dst netip.AddrPort) {
	ctx, cancel := context.WithTimeout(context.Background(), passthroughDialTimeout)
	d, err := cp.dialer.DialContext(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		cp.refuse(c, capturedError, "passthrough to a destination outside the mesh failed", dst, err)
		return
	}
	cp.metrics.captured[capturedPassthrough].Inc()
	splice(c, d)
}

// splice relays a and b both ways with io.Copy (splice(2) between TCP
// sockets), half-closing each direction as it ends, then closes both.
func splice(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { closeQuietly(a); closeQuietly(b) }) }
	half := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil || !relay.CloseWrite(dst) {
			closeBoth()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { half(b, a) })
	half(a, b)
	wg.Wait()
	closeBoth()
}

// refuse counts and logs a captured connection that is not served, and
// resets it (the app sees a refused connection rather than an empty
// answer).
func (cp *capture) refuse(c net.Conn, result, why string, dst netip.AddrPort, err error) {
	cp.metrics.captured[result].Inc()
	// One line per result and second: destinations are whatever the app
	// dials, so they are not part of the limiter's key.
	if cp.o.logs.allow("capture " + result) {
		args := []any{"result", result, "reason", why, "destination", dst.String()}
		if err != nil {
			args = append(args, "err", err.Error())
		}
		cp.o.log.Warn("captured connection refused", args...)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	closeQuietly(c)
}

// captureMetrics are the capture listener's counters, registered on the
// data path's registry (once per registry: several capture loops share
// them).
type captureMetrics struct {
	captured       map[string]prometheus.Counter
	detectTimeouts prometheus.Counter
}

func newCaptureMetrics(m *metrics.Metrics) *captureMetrics {
	captured := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_outbound_captured_total",
		Help: "Outbound connections captured in transparent mode, by result: mesh (to a service's virtual IP), passthrough (to a destination outside the mesh), blocked (outbound mode block), error (original destination unknown or unreachable, no config yet, or a direct connection to the capture port).",
	}, []string{"result"})
	timeouts := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trellis_protocol_detect_timeouts_total",
		Help: "Captured connections to HTTP services that sent no recognizable first bytes within the protocol detection timeout and became opaque tunnels.",
	})
	if m != nil {
		captured = registerOnce(m.Registry(), captured)
		timeouts = registerOnce(m.Registry(), timeouts)
	}
	cm := &captureMetrics{captured: map[string]prometheus.Counter{}, detectTimeouts: timeouts}
	for _, r := range []string{capturedMesh, capturedPassthrough, capturedBlocked, capturedError} {
		cm.captured[r] = captured.WithLabelValues(r)
	}
	return cm
}

// registerOnce registers c on reg, or returns the collector registered
// there before under the same name.
func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(C); ok {
				return prev
			}
		}
		panic("proxy: register capture metrics: " + err.Error())
	}
	return c
}
