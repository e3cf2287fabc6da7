package capture

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
	"github.com/trellismesh/trellis/internal/netcap"
)

// DefaultProtocolDetectTimeout is Config.DetectTimeout's default.
const DefaultProtocolDetectTimeout = 100 * time.Millisecond

// Results of a captured connection (trellis_outbound_captured_total).
const (
	ResultMesh        = "mesh"
	ResultPassthrough = "passthrough"
	ResultBlocked     = "blocked"
	ResultError       = "error"
	// ResultEgressAllowed and ResultEgressDenied are connections to no
	// mesh service from a workload EgressPolicies select: passed through
	// to an allowed host, or refused.
	ResultEgressAllowed = "egress_allowed"
	ResultEgressDenied  = "egress_denied"
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

// PassthroughDialTimeout bounds connecting to a non-mesh destination: the
// app's own connect already succeeded (to the proxy), so this is the
// connect timeout it effectively gets.
const PassthroughDialTimeout = 10 * time.Second

// maxSniff bounds the bytes read to find an HTTP/1 request line; a longer
// line that still looks like one is treated as HTTP (the server answers
// it with an error).
const maxSniff = 8 << 10

// ServerFirst reports whether port is a well-known port of a protocol in
// which the server speaks first, or that starts with TLS: a connection to
// a mesh service there is an opaque tunnel at once.
func ServerFirst(port uint16) bool { return serverFirstPorts[port] }

// Config configures a capture listener. Zero values mean the documented
// defaults.
type Config struct {
	// DetectTimeout bounds the wait for the first bytes of a connection to
	// an HTTP service before it becomes an opaque tunnel. Zero means
	// 100ms.
	DetectTimeout time.Duration

	// OriginalDst recovers a connection's original destination; nil means
	// netcap.OriginalDst. Tests set it (export_test) to stand in for the
	// iptables rules.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
}

// WithDefaults fills the zero values.
func (c Config) WithDefaults() Config {
	if c.DetectTimeout <= 0 {
		c.DetectTimeout = DefaultProtocolDetectTimeout
	}
	if c.OriginalDst == nil {
		c.OriginalDst = netcap.OriginalDst
	}
	return c
}

// IsSelf: dst, a connection's original destination, is the capture
// listener l itself. A connection that was not redirected reports its own
// local address as the original destination; serving it would dial the
// listener again, forever.
func IsSelf(l net.Listener, c net.Conn, dst netip.AddrPort) bool {
	if local := addrPortOf(c.LocalAddr()); dst == local {
		return true
	}
	if dst.Port() != addrPortOf(l.Addr()).Port() {
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

// Detect reads c's first bytes, for at most timeout, until they show an
// HTTP/1.x request line or the HTTP/2 preface (true) or something else
// (false). A timeout means opaque and is counted in m. The returned conn
// replays what was read; err means c ended before sending anything.
func Detect(c net.Conn, timeout time.Duration, m *Metrics) (bool, net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
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
			m.detectTimeouts.Inc()
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

// Passthrough connects c to its original destination dst, which is no
// mesh service, with dialer (which must set the proxy's mark), and relays
// bytes both ways until both end. An error means the dial failed and c is
// still the caller's.
func Passthrough(c net.Conn, dst netip.AddrPort, dialer *net.Dialer, m *Metrics) error {
	return PassthroughPrefix(c, nil, dst, dialer, m, ResultPassthrough)
}

// PassthroughPrefix is Passthrough for a connection whose first bytes,
// prefix, were already read from c (SniffHost): they are sent to dst
// first, unchanged. The connection is counted as result once dialed.
func PassthroughPrefix(c net.Conn, prefix []byte, dst netip.AddrPort, dialer *net.Dialer, m *Metrics, result string) error {
	ctx, cancel := context.WithTimeout(context.Background(), PassthroughDialTimeout)
	d, err := dialer.DialContext(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		return err
	}
	m.Captured(result)
	if len(prefix) > 0 {
		if _, err := d.Write(prefix); err != nil {
			closeQuietly(d)
			closeQuietly(c)
			return nil
		}
	}
	splice(c, d)
	return nil
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

// Metrics are the capture listener's counters, registered on the data
// path's registry (once per registry: several capture loops share them).
type Metrics struct {
	captured       map[string]prometheus.Counter
	detectTimeouts prometheus.Counter
}

// NewMetrics creates the counters on reg, or finds them there; nil reg
// counts without registering.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	captured := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_outbound_captured_total",
		Help: "Outbound connections captured in transparent mode, by result: mesh (to a service's virtual IP), passthrough (to a destination outside the mesh), blocked (outbound mode block), egress_allowed and egress_denied (to a destination outside the mesh, by the EgressPolicies that select the workload), error (original destination unknown or unreachable, no config yet, or a direct connection to the capture port).",
	}, []string{"result"})
	timeouts := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trellis_protocol_detect_timeouts_total",
		Help: "Captured connections to HTTP services that sent no recognizable first bytes within the protocol detection timeout and became opaque tunnels.",
	})
	if reg != nil {
		captured = registerOnce(reg, captured)
		timeouts = registerOnce(reg, timeouts)
	}
	cm := &Metrics{captured: map[string]prometheus.Counter{}, detectTimeouts: timeouts}
	for _, r := range []string{ResultMesh, ResultPassthrough, ResultBlocked, ResultError, ResultEgressAllowed, ResultEgressDenied} {
		cm.captured[r] = captured.WithLabelValues(r)
	}
	return cm
}

// Captured counts a captured connection by result (the Result
// constants).
func (m *Metrics) Captured(result string) { m.captured[result].Inc() }

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
		panic("capture: register metrics: " + err.Error())
	}
	return c
}

func closeQuietly(c io.Closer) { _ = c.Close() }
