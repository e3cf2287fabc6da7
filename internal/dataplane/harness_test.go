package dataplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/url"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/limits"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/tracing"
)

// The data path tests run a client proxy (outbound) and a server proxy
// (inbound) in-process on loopback, with certificates from a test CA and a
// hand-built snapshot:
//
//	test client -> outbound (upstream listener or HTTP proxy) == mTLS ==> inbound -> app

const testTrustDomain = "trellis.test"

var (
	frontendID = mustID("shop", "frontend")
	catalogID  = mustID("shop", "catalog")
	evilID     = mustID("shop", "evil")
)

func mustID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString(testTrustDomain), "ns", ns, "sa", sa)
}

// pki is a test CA and its roots as a pool.
type pki struct {
	t     testing.TB
	ca    *meshca.CA
	roots *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca, _ := testutil.NewCA(t, testTrustDomain)
	roots := x509.NewCertPool()
	for _, r := range ca.Roots() {
		roots.AddCert(r)
	}
	return &pki{t: t, ca: ca, roots: roots}
}

// cert issues a workload certificate for id, with the chain a peer needs
// to reach the root.
func (p *pki) cert(id spiffeid.ID) *tls.Certificate {
	p.t.Helper()
	c, err := p.ca.IssueServing(id, time.Hour, nil, nil)
	if err != nil {
		p.t.Fatalf("issue %s: %v", id, err)
	}
	if len(c.Certificate) == 1 {
		for _, i := range p.ca.Intermediates() {
			c.Certificate = append(c.Certificate, i.Raw)
		}
	}
	return c
}

func (p *pki) identity(id spiffeid.ID) *mtls.StaticIdentity {
	return &mtls.StaticIdentity{SPIFFEID: id, Cert: p.cert(id), Roots: p.roots}
}

// rotatingIdentity is an Identity whose certificate a test swaps.
type rotatingIdentity struct {
	id    spiffeid.ID
	cert  atomic.Pointer[tls.Certificate]
	roots *x509.CertPool
}

func (r *rotatingIdentity) ID() spiffeid.ID               { return r.id }
func (r *rotatingIdentity) Certificate() *tls.Certificate { return r.cert.Load() }
func (r *rotatingIdentity) Bundle() *x509.CertPool        { return r.roots }
func (r *rotatingIdentity) swap(c *tls.Certificate)       { r.cert.Store(c) }

func (p *pki) rotating(id spiffeid.ID) *rotatingIdentity {
	r := &rotatingIdentity{id: id, roots: p.roots}
	r.swap(p.cert(id))
	return r
}

func serial(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }

func idSet(ids ...spiffeid.ID) map[spiffeid.ID]bool {
	m := map[spiffeid.ID]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// snapHolder is the atomically swapped current snapshot.
type snapHolder struct {
	p atomic.Pointer[meshconfig.Snapshot]
}

func (s *snapHolder) get() *meshconfig.Snapshot     { return s.p.Load() }
func (s *snapHolder) set(snap *meshconfig.Snapshot) { s.p.Store(snap) }

// service builds a snapshot service whose endpoints are proxies at addrs,
// served by the identities ids.
func service(name, ns, protocol string, ids []spiffeid.ID, addrs ...string) *meshconfig.Service {
	s := &meshconfig.Service{Name: name, Namespace: ns, Protocol: protocol, IDs: idSet(ids...)}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, meshconfig.Endpoint{Addr: a, ID: ids[0]})
	}
	return s
}

func snapshot(mode, authz string, roots *x509.CertPool, svcs ...*meshconfig.Service) *meshconfig.Snapshot {
	m := make(map[string]*meshconfig.Service, len(svcs))
	for _, s := range svcs {
		m[s.Key()] = s
	}
	return &meshconfig.Snapshot{Version: "1", MTLSMode: mode, AuthzDefault: authz, TrustBundle: roots, Services: m}
}

// meshOptions shapes a test mesh; zero values mean an HTTP app, STRICT,
// allow by default, and correct identities.
type meshOptions struct {
	protocol string
	mode     string
	authz    string
	// app serves HTTP requests; appAddr is used instead when set (gRPC,
	// TCP echo).
	app     http.Handler
	appH2C  bool
	appAddr string
	// serverID is the identity the server proxy's certificate carries
	// (default catalog, which the snapshot expects).
	serverID     spiffeid.ID
	clientIdent  mtls.Identity
	serverIdent  mtls.Identity
	extra        []*meshconfig.Service
	drainTimeout time.Duration
	// idleTimeout is both proxies' IdleTimeout (0: the default).
	idleTimeout time.Duration
	// authorizer decides on the server proxy (default: the mesh default).
	authorizer admission.Authorizer
	// serviceOf is the snapshot's SPIFFE ID -> service map (default none:
	// every caller's service is unknown).
	serviceOf map[string]string
	// events receives the server proxy's access events, a fraction
	// accessLogRate of its requests.
	events        func(*pb.Event)
	accessLogRate float64
	// clientEvents receives the client proxy's events (egress.denied).
	clientEvents func(*pb.Event)
	// pki issues the default identities and is the trust bundle; a new
	// one when nil.
	pki *pki
	// limits are both proxies' Limits (zero: the defaults).
	limits limits.Limits
	// tracing, when set, is both proxies' tracing (each its own
	// tracing.Manager).
	tracing *meshconfig.Tracing
}

// mesh is a client proxy and a server proxy for service catalog.shop.
type mesh struct {
	t             testing.TB
	pki           *pki
	snap          snapHolder
	in            *dataplane.Inbound
	out           *dataplane.Outbound
	inboundAddr   string
	upstreamAddr  string
	proxyAddr     string
	appAddr       string
	clientMetrics *metrics.Metrics
	serverMetrics *metrics.Metrics
	logs          *testutil.LogBuffer
	svc           *meshconfig.Service
	opts          meshOptions
}

func newMesh(t testing.TB, o meshOptions) *mesh {
	t.Helper()
	if o.protocol == "" {
		o.protocol = meshconfig.ProtocolHTTP
	}
	if o.mode == "" {
		o.mode = "STRICT"
	}
	if o.authz == "" {
		o.authz = "allow"
	}
	if o.serverID.IsZero() {
		o.serverID = catalogID
	}
	if o.pki == nil {
		o.pki = newPKI(t)
	}
	m := &mesh{t: t, pki: o.pki, clientMetrics: metrics.New(), serverMetrics: metrics.New(), opts: o}
	m.logs = testutil.NewLogBuffer(t)
	if o.clientIdent == nil {
		o.clientIdent = m.pki.identity(frontendID)
	}
	if o.serverIdent == nil {
		o.serverIdent = m.pki.identity(o.serverID)
	}
	m.appAddr = o.appAddr
	if m.appAddr == "" {
		h := o.app
		if h == nil {
			h = testutil.EchoApp()
		}
		m.appAddr = startHTTPApp(t, h, o.appH2C)
	}
	inL := listen(t)
	m.inboundAddr = inL.Addr().String()
	m.svc = service("catalog", "shop", o.protocol, []spiffeid.ID{catalogID}, m.inboundAddr)
	snap := snapshot(o.mode, o.authz, m.pki.roots, append([]*meshconfig.Service{m.svc}, o.extra...)...)
	snap.ServiceOf = o.serviceOf
	m.snap.set(snap)

	var inTracing, outTracing *tracing.Manager
	if o.tracing != nil {
		inTracing = tracing.NewManager("catalog", "shop", catalogID.String(), m.logs.Logger)
		outTracing = tracing.NewManager("frontend", "shop", frontendID.String(), m.logs.Logger)
		inTracing.Apply(o.tracing)
		outTracing.Apply(o.tracing)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			inTracing.Close(ctx)
			outTracing.Close(ctx)
		})
	}
	m.in = dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: o.serverIdent, Snapshot: m.snap.get, Authorizer: o.authorizer,
		Service: "catalog", Namespace: "shop", Protocol: o.protocol, AppAddr: m.appAddr,
		Logger: m.logs.Logger.With("proxy", "server"), Metrics: m.serverMetrics, DrainTimeout: o.drainTimeout, IdleTimeout: o.idleTimeout,
		Events: o.events, AccessLogSampleRate: o.accessLogRate, Limits: o.limits, Tracing: inTracing,
	})
	serve(t, "inbound", func() error { return m.in.Serve(inL) })
	t.Cleanup(func() { shutdown(t, m.in.Shutdown) })

	m.out = dataplane.NewOutbound(dataplane.DataPlaneConfig{
		Identity: o.clientIdent, Snapshot: m.snap.get,
		Service: "frontend", Namespace: "shop", Protocol: meshconfig.ProtocolHTTP, AppAddr: "127.0.0.1:1",
		Logger: m.logs.Logger.With("proxy", "client"), Metrics: m.clientMetrics, DrainTimeout: o.drainTimeout, IdleTimeout: o.idleTimeout,
		Limits: o.limits, Events: o.clientEvents, Tracing: outTracing,
	})
	upL := listen(t)
	m.upstreamAddr = upL.Addr().String()
	serve(t, "upstream", func() error { return m.out.ServeUpstream(upL, meshconfig.ServiceKey("catalog", "shop")) })
	pxL := listen(t)
	m.proxyAddr = pxL.Addr().String()
	serve(t, "http proxy", func() error { return m.out.ServeHTTPProxy(pxL) })
	t.Cleanup(func() { shutdown(t, m.out.Shutdown) })
	return m
}

// upstream serves an extra upstream listener for key on the client proxy.
func (m *mesh) upstream(key string) string {
	l := listen(m.t)
	serve(m.t, "upstream "+key, func() error { return m.out.ServeUpstream(l, key) })
	// Cleanups run last-in first-out: shut down before serve's check.
	m.t.Cleanup(func() { shutdown(m.t, m.out.Shutdown) })
	return l.Addr().String()
}

// url is an http:// URL on the client proxy's catalog.shop listener.
func (m *mesh) url(path string) string { return "http://" + m.upstreamAddr + path }

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs a Serve loop and fails the test if it stops for any reason
// other than shutdown.
func serve(t testing.TB, what string, f func() error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The label follows every goroutine the server starts, so CPU
		// profiles of the benchmarks split by proxy side.
		pprof.Do(context.Background(), pprof.Labels("serve", what), func(context.Context) {
			if err := f(); err != nil && err != http.ErrServerClosed {
				t.Errorf("%s: Serve: %v", what, err)
			}
		})
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Serve did not return after shutdown", what)
		}
	})
}

func shutdown(t testing.TB, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// startHTTPApp serves h on loopback with HTTP/1.1, and h2c when asked.
func startHTTPApp(t testing.TB, h http.Handler, h2c bool) string {
	t.Helper()
	l := listen(t)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(h2c)
	srv := &http.Server{Handler: h, Protocols: &p}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// counter counts requests reaching a handler.
type counter struct{ n atomic.Int64 }

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.n.Add(1); h.ServeHTTP(w, r) })
}

// metric returns the value of the series name{labels} (0 when absent),
// summed over series that also carry other labels; counters and
// histograms (sample count) alike.
func metric(t testing.TB, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	return testutil.Metric(t, m.Registry(), name, labels)
}

func mustParseURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
