package dataplane

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/tracing"
)

// The data path, end to end:
//
//	app -> Outbound (ServeUpstream / ServeHTTPProxy: HTTP/1.1, h2c, TCP)
//	    -> balancer picks a PeerEndpoint -> mTLS dial with secure naming
//	       (ALPN h2: pooled, multiplexed; http/1.1: Upgrade; trellis-tcp/1:
//	       one tunnel per connection)
//	    -> Inbound (sniff TLS or plaintext, verify the caller)
//	    -> admission chain per request, authorizer per connection -> X-Forwarded-Client-Cert
//	    -> app (HTTP/1.1 keep-alive pool, or h2c for http2/grpc; TCP)
//
// Files: inbound.go and inboundhttp.go (the server side), outbound.go,
// httpproxy.go, transparent.go and egress.go (the client side), fastpath*.go (the
// HTTP/1.1 fast path), pool.go and balancer.go (peer endpoints). Its parts
// are packages below it: admission (the inbound chain and authorizers),
// mtls, upstream (keep-alive pools, the app client), relay (moving HTTP and
// bytes), connset, capture, limits and metrics.

// DataPlaneConfig configures the inbound and outbound data path. Zero values
// mean the documented defaults.
type DataPlaneConfig struct {
	// Identity supplies the certificate presented on every handshake (read
	// per handshake, so renewals apply to new connections without dropping
	// old ones) and the trust bundle peers are verified against.
	Identity mtls.Identity
	// Snapshot returns the current compiled config; nil until the first
	// config arrives, during which inbound refuses connections and outbound
	// fails fast with 503.
	Snapshot func() *meshconfig.Snapshot
	// Authorizer decides inbound requests; nil means
	// admission.MeshDefaultAuthorizer.
	Authorizer admission.Authorizer
	// ExtAuthz asks the external authorization providers of CUSTOM
	// policies; the caller owns it (Retain on new snapshots, Close).
	// Nil means a pool of the inbound's own, closed by Shutdown.
	ExtAuthz *extauthz.Pool
	// Tracing makes the spans of the requests the proxy handles
	// (trace.go); nil, or a Manager without a Tracer, traces nothing.
	Tracing *tracing.Manager
	// Service, Namespace and Protocol describe this workload; Protocol is
	// http (default), http2, grpc or tcp.
	Service, Namespace, Protocol string
	// AppAddr is where the local application listens.
	AppAddr string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics may be nil (nothing is recorded).
	Metrics *metrics.Metrics
	// Events receives the inbound side's access events (kind "access");
	// it must not block. Nil means none.
	Events func(*pb.Event)
	// AccessLogSampleRate is the fraction of inbound HTTP requests that
	// become access events: 0 (none, the default) to 1 (every one).
	AccessLogSampleRate float64
	// DrainTimeout, when positive, caps how long Shutdown waits for
	// in-flight requests on top of its context.
	DrainTimeout time.Duration
	// DialTimeout bounds connecting to a peer proxy or the app, TLS
	// handshake included. Zero means 2s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds an inbound connection's first bytes and TLS
	// handshake. Zero means 10s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Zero means
	// 5 minutes.
	IdleTimeout time.Duration
	// Control, when set, is the Control func of every socket the data path
	// dials (peers, the app, passthrough destinations): transparent mode
	// sets SO_MARK there so the iptables rules do not capture the proxy's
	// own connections.
	Control func(network, address string, c syscall.RawConn) error
	// Limits bounds slow and large requests and what one caller may hold
	// (limits.go); zero values mean the defaults.
	Limits limits.Limits
	// NewBalancer builds the endpoint picker of one service for one
	// snapshot. Nil means NewPolicyBalancer: the service's TrafficPolicy
	// load balancer, peak-EWMA by default.
	NewBalancer func(svc *meshconfig.Service, eps []*PeerEndpoint) Balancer
	// Discover, when set, asks the control plane for a service the
	// config does not list: the key "name.namespace", or with vip valid
	// the service of that virtual IP. It waits, bounded (about 100 ms),
	// and reports whether the newest config lists it. Nil: a service the
	// config lacks is unknown.
	Discover func(key string, vip netip.Addr) bool
}

// Defaults of DataPlaneConfig's zero values.
const (
	DefaultDialTimeout      = 2 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
)

func (c DataPlaneConfig) withDefaults() DataPlaneConfig {
	if c.Identity == nil {
		c.Identity = mtls.NoIdentity{}
	}
	if c.Authorizer == nil {
		c.Authorizer = admission.MeshDefaultAuthorizer{}
	}
	if c.Protocol == "" {
		c.Protocol = meshconfig.ProtocolHTTP
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Snapshot == nil {
		c.Snapshot = func() *meshconfig.Snapshot { return nil }
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.NewBalancer == nil {
		c.NewBalancer = NewPolicyBalancer
	}
	c.Limits = c.Limits.WithDefaults()
	return c
}

// xfccHeader is the Envoy convention for telling the app who called.
const xfccHeader = admission.XFCCHeader

// peer is what the inbound side knows about the caller of one connection,
// computed once per connection (or once per identity) rather than per
// request.
type peer struct {
	id        spiffeid.ID // zero for a plaintext caller
	mtls      bool
	principal string   // id.String(), "" for plaintext
	namespace string   // from /ns/<namespace>/..., "" when unknown
	xfcc      []string // X-Forwarded-Client-Cert value; nil for plaintext
	addr      string   // a gateway client's IP address; "" elsewhere
	// source is the caller's metrics entry for the service the config
	// names it by; see sourceFor.
	source atomic.Pointer[sourceBinding]
}

// admission is the peer as the admission chain sees it.
func (p *peer) admission() admission.Peer {
	return admission.Peer{ID: p.id, Principal: p.principal, MTLS: p.mtls, Addr: p.addr}
}

// sourceBinding ties a caller's metrics entry to the snapshot that named
// its service (snap.ServiceOf).
type sourceBinding struct {
	snap    *meshconfig.Snapshot
	service string
	metrics *metrics.Source
	// gen is the metrics cache generation metrics came from: after the
	// cache starts over, the entry is no longer reported and must be
	// looked up again.
	gen uint64
}

// newPeer describes the caller id (zero for plaintext) under snap (nil
// before the first config).
func newPeer(self, id spiffeid.ID, m *metrics.Metrics, service, namespace string, snap *meshconfig.Snapshot) *peer {
	p := &peer{id: id}
	if !id.IsZero() {
		p.mtls = true
		p.principal = id.String()
		p.namespace = namespaceOf(id)
		p.xfcc = []string{"By=" + self.String() + ";URI=" + p.principal}
	}
	b := &sourceBinding{snap: snap, service: p.serviceIn(snap), gen: m.SourcesGen()}
	b.metrics = m.ForSource(b.service, p.principal, p.namespace, p.mtls, service, namespace)
	p.source.Store(b)
	return p
}

// serviceIn is the caller's service under snap, "" when none or several.
func (p *peer) serviceIn(snap *meshconfig.Snapshot) string {
	if snap == nil || p.principal == "" {
		return ""
	}
	return snap.ServiceOf[p.principal]
}

// sourceFor returns the caller's metrics entry under snap. Peers are
// cached per identity for the process's life, and a caller may connect
// before the config names its service (or its service may change): the
// entry follows the config, and the metrics cache (which starts over past
// maxCowEntries callers). While neither changes this is two atomic loads
// and two comparisons.
func (p *peer) sourceFor(snap *meshconfig.Snapshot, m *metrics.Metrics, service, namespace string) *metrics.Source {
	b := p.source.Load()
	gen := m.SourcesGen()
	if (b.snap == snap || snap == nil) && b.gen == gen {
		return b.metrics
	}
	nb := &sourceBinding{snap: b.snap, service: b.service, metrics: b.metrics, gen: gen}
	if snap != nil {
		nb.snap, nb.service = snap, p.serviceIn(snap)
	}
	if nb.service != b.service || b.gen != gen {
		nb.metrics = m.ForSource(nb.service, p.principal, p.namespace, p.mtls, service, namespace)
	}
	// Concurrent requests may race to store: their bindings are equal.
	p.source.Store(nb)
	return nb.metrics
}

// namespaceOf extracts <ns> from a /ns/<ns>/sa/<sa> SPIFFE path.
func namespaceOf(id spiffeid.ID) string {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}

// closeQuietly closes c, ignoring the error: used on paths that are
// already failing or finished.
func closeQuietly(c io.Closer) { _ = c.Close() }

// logLimiter lets one log line per key through per second: failures that
// repeat per request (an endpoint down, a scanner hitting the inbound port)
// must not flood the log.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *logLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last[key]) < time.Second {
		return false
	}
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	l.last[key] = now
	return true
}
