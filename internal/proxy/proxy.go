package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlclient"
	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/dataplane/mtls"
	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/meshdns"
	"github.com/trellismesh/trellis/internal/servingcert"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
	"github.com/trellismesh/trellis/internal/tracing"
	"github.com/trellismesh/trellis/internal/version"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// Proxy is one sidecar. Create with New, then Start; Shutdown drains it.
type Proxy struct {
	cfg          Config
	log          *slog.Logger
	control      string // the control plane's gRPC target (controlDialTarget)
	certs        *workloadcert.Manager
	controlRoots []byte
	snap         atomic.Pointer[meshconfig.Snapshot]
	// extAuthz holds the connections to external authorization
	// providers, kept across snapshots while their address stays.
	extAuthz *extauthz.Pool
	// tracing holds the span exporter of the Mesh's tracing, rebuilt when
	// a snapshot changes it.
	tracing       *tracing.Manager
	disc          *discovery // asks for services the scoped config lacks
	connected     atomic.Bool
	draining      atomic.Bool
	ready         chan struct{}
	readyOnce     sync.Once
	advertiseAddr string
	metrics       *metrics.Metrics
	instance      string
	events        *emitter.Emitter
	started       time.Time // when the counters started, for traffic stats
	reports       reporter  // builds the config stream's Reports
	// reportNow asks the config stream for a report at once (a new
	// certificate).
	reportNow chan struct{}
	// authz is Config.Authorizer, or the proxy's own PolicyAuthorizer.
	authz admission.Authorizer

	inbound  *dataplane.Inbound
	outbound *dataplane.Outbound
	admin    *http.Server
	health   *http.Server // --health-addr; nil when off

	inboundLis, adminLis, httpProxyLis, healthLis net.Listener
	upstreamLis                                   []net.Listener
	dns                                           *meshdns.Server // nil unless DNSAddr

	// Transparent mode (transparent.go): the capture listener, and the
	// original destination lookup tests replace.
	captureLis net.Listener
	origDst    func(net.Conn) (netip.AddrPort, error)

	// Gateway mode (gateway.go): its listeners and certificates.
	gwHTTPSLis, gwHTTPLis net.Listener
	certStore             *servingcert.Store

	// runCtx lives until Shutdown (cancel ends it).
	runCtx context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates cfg and prepares a proxy. It does not contact the control
// plane or listen yet.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.JWKSCAFile != "" {
		c, err := jwksClient(cfg.JWKSCAFile)
		if err != nil {
			return nil, err
		}
		meshconfig.SetJWKSClient(c)
	}
	id, serviceAccountToken, err := workloadIDFromToken(cfg.Token, cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	_, ns, sa, _ := identity.ParseWorkloadID(id.String())
	if serviceAccountToken && (ns != cfg.Namespace || sa != cfg.ServiceAccount) {
		return nil, fmt.Errorf("--token-file: the ServiceAccount token is for ns/%s/sa/%s, but --namespace %s --service-account %s ask for ns/%s/sa/%s",
			ns, sa, cfg.Namespace, cfg.ServiceAccount, cfg.Namespace, cfg.ServiceAccount)
	}
	if ns != cfg.Namespace || sa != cfg.ServiceAccount {
		return nil, fmt.Errorf("--token-file: the join token is for %s, but --namespace %s --service-account %s ask for ns/%s/sa/%s; create a token with `trellis token create --service %s --namespace %s`",
			id, cfg.Namespace, cfg.ServiceAccount, cfg.Namespace, cfg.ServiceAccount, cfg.Service, cfg.Namespace)
	}
	rootsPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	roots, err := identity.ParseCertsPEM(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", cfg.CAFile, err)
	}
	pool := poolOf(roots)
	p := &Proxy{extAuthz: extauthz.NewPool(), cfg: cfg, log: cfg.Logger.With("spiffe_id", id.String()), ready: make(chan struct{}), metrics: metrics.New(), controlRoots: rootsPEM, started: cfg.Clock.Now(),
		reportNow: make(chan struct{}, 1), control: controlDialTarget(cfg.ControlAddrs)}
	p.certs = workloadcert.New(id, p.control, pool, cfg.Token, p.log, cfg.Clock)
	p.tracing = tracing.NewManager(cfg.Service, cfg.Namespace, id.String(), p.log)
	var upstreams []string
	for _, u := range cfg.Upstreams {
		upstreams = append(upstreams, meshconfig.ServiceKey(u.Service, u.Namespace))
	}
	p.disc = newDiscovery(p.snapshot, upstreams)
	if serviceAccountToken && cfg.TokenFile != "" {
		p.certs.RenewToken = func() (string, error) {
			b, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("--token-file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	p.certs.Dial = cfg.contextDialer() // transparent mode
	instance := make([]byte, 8)
	_, _ = rand.Read(instance)
	p.instance = hex.EncodeToString(instance)
	// Audit and access events and traffic stats go to the collector (see
	// collectorAddr) over mTLS with the workload certificate; events are
	// queued in memory, then on disk. The control plane is its target
	// or any one of its addresses.
	controlNames := append([]string{p.control}, cfg.ControlAddrs...)
	p.events, err = emitter.New(emitter.Options{
		Resolve: p.collectorAddr,
		TLSFor: func(addr string) *tls.Config {
			return systemTLS(id.TrustDomain(), p.certs.ControlRoots, p.certs.Certificate, collectorAccounts(cfg.CollectorAddr, controlNames, addr)...)
		},
		Instance:      p.instance,
		SpoolDir:      cfg.SpoolDir,
		Logger:        p.log,
		Clock:         cfg.Clock,
		Stats:         func() *pb.TrafficStats { return p.metrics.TrafficStats(cfg.Service, cfg.Namespace, p.started) },
		StatsInterval: cfg.StatsInterval,
		Dialer:        cfg.contextDialer(), // transparent mode
	})
	if err != nil {
		return nil, fmt.Errorf("--spool-dir: %w", err)
	}
	p.metrics.Registry().MustRegister(p.events)
	// Every certificate is an audit event, and is reported on the config
	// stream at once (the control plane tracks issuers during a CA
	// rotation).
	p.certs.OnIssued = func(leaf *x509.Certificate, renewal bool) {
		kind := "cert.issued"
		if renewal {
			kind = "cert.renewed"
		}
		p.events.Emit(&pb.Event{Kind: kind, SourceId: id.String(), SourceService: cfg.Service, SourceNamespace: cfg.Namespace,
			Attributes: map[string]string{"serial": leaf.SerialNumber.Text(16), "expires": leaf.NotAfter.UTC().Format(time.RFC3339)}})
		wake(p.reportNow)
	}
	p.reports.snapshot, p.reports.cert, p.reports.bundle = p.snapshot, p.certs.Certificate, p.certs.Roots
	p.authz = cfg.Authorizer
	if p.authz == nil {
		p.authz = cfg.policyAuthorizer(p.metrics, p.events.Emit)
	}
	return p, nil
}

// workloadIDFromToken reads the SPIFFE ID a token names without verifying
// it: the control plane verifies; the proxy only needs to know which
// identity to ask for. A join token's subject is the SPIFFE ID; a
// Kubernetes ServiceAccount token's (system:serviceaccount:NS:SA) is one
// in trust domain td. sa says which it was.
func workloadIDFromToken(token, td string) (id spiffeid.ID, sa bool, err error) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return spiffeid.ID{}, false, fmt.Errorf("--token-file: not a Trellis join token or a Kubernetes ServiceAccount token (%v); create a join token with `trellis token create`", err)
	}
	if rest, ok := strings.CutPrefix(claims.Subject, "system:serviceaccount:"); ok {
		ns, name, _ := strings.Cut(rest, ":")
		trust, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return spiffeid.ID{}, true, fmt.Errorf("--trust-domain %q: %v", td, err)
		}
		id, err := spiffeid.FromSegments(trust, "ns", ns, "sa", name)
		if err != nil {
			return spiffeid.ID{}, true, fmt.Errorf("--token-file: the ServiceAccount token's subject %q: %v", claims.Subject, err)
		}
		return id, true, nil
	}
	id, _, _, err = identity.ParseWorkloadID(claims.Subject)
	if err != nil {
		return spiffeid.ID{}, false, fmt.Errorf("--token-file: the token's subject is not a workload identity: %w", err)
	}
	return id, false, nil
}

// snapshot is the current compiled config, nil before the first.
func (p *Proxy) snapshot() *meshconfig.Snapshot { return p.snap.Load() }

// collectorAddr is where telemetry goes: --collector when given, else the
// mesh's collector_address, else the control plane (which embeds the
// collector; with several --control addresses, the same failover list).
// Before the first config it is "": the emitter waits, since the mesh may
// name an external collector.
func (p *Proxy) collectorAddr() string {
	if p.cfg.CollectorAddr != "" {
		return p.cfg.CollectorAddr
	}
	s := p.snapshot()
	switch {
	case s == nil:
		return ""
	case s.CollectorAddr != "":
		return s.CollectorAddr
	default:
		return p.control
	}
}

// trimAfterStartup drops the binary's resident pages that startup
// touched (see trimText) once the proxy has been ready for a while.
func (p *Proxy) trimAfterStartup(ctx context.Context) {
	select {
	case <-p.ready:
	case <-ctx.Done():
		return
	}
	t := time.NewTimer(trimDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return
	}
	n, err := trimText()
	if err != nil {
		p.log.Debug("could not release the binary's startup pages", "err", err)
		return
	}
	p.log.Debug("released the binary's startup pages", "mapped_bytes", n)
}

// trimDelay is how long after readiness the startup pages are released.
const trimDelay = 10 * time.Second

// Ready is closed once the proxy has a certificate and a first config.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Identity is the proxy's workload identity: the current certificate, and
// the trust bundle from the latest config (or from the certificate
// response before the first config).
func (p *Proxy) Identity() mtls.Identity { return proxyIdentity{p} }

type proxyIdentity struct{ p *Proxy }

func (i proxyIdentity) ID() spiffeid.ID { return i.p.certs.ID() }

func (i proxyIdentity) Certificate() *tls.Certificate { return i.p.certs.Certificate() }

func (i proxyIdentity) Bundle() *x509.CertPool {
	if s := i.p.snapshot(); s != nil {
		return s.TrustBundle
	}
	return i.p.certs.Bundle()
}

// Start binds every listener (so port errors surface at once), obtains the
// workload certificate, opens the config stream and serves. It returns once
// listening and certified; readiness (first config) follows, see Ready.
func (p *Proxy) Start(ctx context.Context) error {
	if err := p.listen(); err != nil {
		p.closeListeners()
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	p.runCtx, p.cancel = rctx, cancel
	p.registerGauges()
	p.admin = &http.Server{Handler: p.adminHandler(p.metrics.Registry()), ReadHeaderTimeout: 10 * time.Second}
	p.goServe("admin", func() error { return p.admin.Serve(p.adminLis) })
	if p.healthLis != nil {
		p.health = &http.Server{Handler: p.healthMux(), ReadHeaderTimeout: 10 * time.Second}
		p.goServe("health", func() error { return p.health.Serve(p.healthLis) })
	}

	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.events.Run(rctx) }()
	if err := p.certs.Obtain(ctx); err != nil {
		cancel()
		p.closeListeners()
		return err
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.certs.Run(rctx) }()
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.trimAfterStartup(rctx) }()

	cc := &controlclient.Client{
		Addr:  p.control,
		Certs: p.certs,
		Hello: &pb.Hello{
			Service: p.cfg.Service, Namespace: p.cfg.Namespace, AdvertiseAddr: p.advertiseAddr, Protocol: p.cfg.Protocol,
			Labels: p.cfg.Labels, ProxyVersion: version.String(), Instance: p.instance,
		},
		Dial:      p.cfg.contextDialer(), // transparent mode
		Wanted:    p.disc.wanted,
		Target:    controlTarget{p},
		ReportNow: p.reportNow,
		Log:       p.log,
		Clock:     p.cfg.Clock,
	}
	p.disc.send = cc.Discover
	dp := dataplane.DataPlaneConfig{
		Identity:            p.Identity(),
		Snapshot:            p.snapshot,
		Authorizer:          p.authz,
		ExtAuthz:            p.extAuthz,
		Tracing:             p.tracing,
		Service:             p.cfg.Service,
		Namespace:           p.cfg.Namespace,
		Protocol:            p.cfg.Protocol,
		AppAddr:             p.cfg.AppAddr,
		Logger:              p.log,
		Metrics:             p.metrics,
		DrainTimeout:        p.cfg.DrainTimeout,
		Events:              p.events.Emit,
		AccessLogSampleRate: p.cfg.AccessLogSampleRate,
		Limits:              p.cfg.Limits,
		Control:             p.cfg.socketControl(), // transparent mode
		Discover:            p.disc.Discover,
	}
	p.inbound = dataplane.NewInbound(dp)
	p.outbound = dataplane.NewOutbound(dp)
	p.goServe("inbound", func() error { return p.inbound.Serve(p.inboundLis) })
	for i, l := range p.upstreamLis {
		u := p.cfg.Upstreams[i]
		l := l
		p.goServe("upstream "+u.Service+"."+u.Namespace, func() error { return p.outbound.ServeUpstream(l, meshconfig.ServiceKey(u.Service, u.Namespace)) })
	}
	if p.httpProxyLis != nil {
		p.goServe("http proxy", func() error { return p.outbound.ServeHTTPProxy(p.httpProxyLis) })
	}
	p.startGateway()
	if p.captureLis != nil {
		cc := capture.Config{DetectTimeout: p.cfg.ProtocolDetectTimeout, OriginalDst: p.origDst}
		p.goServe("outbound capture", func() error { return p.outbound.ServeCapture(p.captureLis, cc) })
	}

	if p.dns != nil {
		p.dns.Serve()
	}

	p.wg.Add(1)
	go func() { defer p.wg.Done(); cc.Run(rctx) }()
	p.log.Info("proxy started", "service", p.cfg.Service, "namespace", p.cfg.Namespace, "protocol", p.cfg.Protocol,
		"inbound", p.inboundLis.Addr().String(), "advertise", p.advertiseAddr, "app", p.cfg.AppAddr, "admin", p.adminLis.Addr().String())
	return nil
}

func (p *Proxy) listen() error {
	var err error
	if p.adminLis, err = net.Listen("tcp", p.cfg.AdminAddr); err != nil {
		return fmt.Errorf("--admin-addr %s: %w", p.cfg.AdminAddr, err)
	}
	if p.cfg.HealthAddr != "" {
		if p.healthLis, err = net.Listen("tcp", p.cfg.HealthAddr); err != nil {
			return fmt.Errorf("--health-addr %s: %w", p.cfg.HealthAddr, err)
		}
	}
	if p.inboundLis, err = net.Listen("tcp", p.cfg.InboundAddr); err != nil {
		return fmt.Errorf("--inbound-addr %s: %w", p.cfg.InboundAddr, err)
	}
	p.advertiseAddr = advertise(p.cfg.AdvertiseAddr, p.inboundLis.Addr())
	switch {
	case p.cfg.AppAddr == "":
		// Client only: nothing behind the inbound listener, so other
		// proxies must not be sent here.
		p.advertiseAddr = ""
		p.log.Info("no --app-addr: client only; registered with the control plane but not as an endpoint of its service")
	case p.advertiseAddr == "":
		p.log.Warn("inbound listens on an unspecified address and --advertise-addr is not set: other proxies cannot reach this workload", "inbound", p.inboundLis.Addr().String())
	}
	for _, u := range p.cfg.Upstreams {
		l, err := net.Listen("tcp", u.Listen)
		if err != nil {
			return fmt.Errorf("--upstream %s.%s=%s: %w", u.Service, u.Namespace, u.Listen, err)
		}
		p.upstreamLis = append(p.upstreamLis, l)
	}
	if p.cfg.HTTPProxyAddr != "off" {
		if p.httpProxyLis, err = net.Listen("tcp", p.cfg.HTTPProxyAddr); err != nil {
			return fmt.Errorf("--http-proxy-addr %s: %w", p.cfg.HTTPProxyAddr, err)
		}
	}
	if p.cfg.Transparent {
		if p.captureLis, err = net.Listen("tcp", p.cfg.OutboundCaptureAddr); err != nil {
			return fmt.Errorf("--outbound-capture-addr %s: %w", p.cfg.OutboundCaptureAddr, err)
		}
	}
	if err := p.gatewayListeners(); err != nil {
		return err
	}
	if p.cfg.DNSAddr != "" {
		p.dns = meshdns.New(meshdns.Options{Namespace: p.cfg.Namespace, Upstreams: p.cfg.DNSUpstreams, Mark: p.cfg.Transparent, Log: p.log, Registerer: p.metrics.Registry(), Discover: p.disc.Discover}, p.snapshot)
		if err := p.dns.Listen(p.cfg.DNSAddr); err != nil {
			return fmt.Errorf("--dns-addr %s: %w", p.cfg.DNSAddr, err)
		}
	}
	return nil
}

func (p *Proxy) closeListeners() {
	for _, l := range append([]net.Listener{p.adminLis, p.healthLis, p.inboundLis, p.httpProxyLis, p.captureLis, p.gwHTTPSLis, p.gwHTTPLis}, p.upstreamLis...) {
		if l != nil {
			l.Close()
		}
	}
	if p.dns != nil {
		p.dns.Close()
	}
}

func (p *Proxy) goServe(what string, serve func() error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			p.log.Error("listener stopped", "listener", what, "err", err)
		}
	}()
}

// apply compiles a pushed snapshot and swaps it in; an error keeps the last
// good one (the control client NACKs).
func (p *Proxy) apply(s *pb.Snapshot) error {
	snap, err := meshconfig.Compile(s)
	if err != nil {
		return err
	}
	p.snap.Store(snap)
	p.extAuthz.Retain(snap.ExtAuthz) // close providers the new config dropped
	p.tracing.Apply(snap.Tracing)
	p.disc.notify()
	for _, key := range append(snap.Gateway.Services(), snap.RouteServices()...) {
		if snap.Services[key] == nil {
			// A gateway asks for its routes' services, and a proxy for
			// its Routes' backends and mirrors, before the first request
			// does.
			go p.disc.Discover(key, netip.Addr{})
		}
	}
	p.certs.FollowCA(snap.Roots, snap.Issuer) // after a CA rotation: trust the new root, renew now
	p.readyOnce.Do(func() { close(p.ready) })
	return nil
}

func (p *Proxy) running() (string, string) {
	if s := p.snapshot(); s != nil {
		return s.Version, s.Hash
	}
	return "", ""
}

// controlTarget is the proxy as its control client sees it.
type controlTarget struct{ p *Proxy }

func (t controlTarget) Apply(s *pb.Snapshot) error      { return t.p.apply(s) }
func (t controlTarget) Running() (version, hash string) { return t.p.running() }
func (t controlTarget) Report() *pb.Report              { return t.p.reports.report() }
func (t controlTarget) StreamState(up bool, _ error)    { t.p.connected.Store(up) }

func (p *Proxy) registerGauges() {
	reg := p.metrics.Registry()
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_certificate_expiry_timestamp_seconds",
			Help: "When the proxy's workload certificate expires (Unix seconds); 0 before the first.",
		}, func() float64 {
			if c := p.certs.Certificate(); c != nil {
				return float64(c.Leaf.NotAfter.Unix())
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trellis_certificate_renewals_total",
			Help: "Workload certificate renewals.",
		}, func() float64 { return float64(p.certs.Renewals()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trellis_certificate_request_failures_total",
			Help: "Failed certificate requests (join or renewal).",
		}, func() float64 { return float64(p.certs.Failures()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_config_version",
			Help: "Version of the config the proxy runs; 0 before the first.",
		}, func() float64 {
			if s := p.snapshot(); s != nil {
				v, _ := strconv.ParseFloat(s.Version, 64)
				return v
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_control_plane_connected",
			Help: "1 while the config stream to the control plane is up.",
		}, func() float64 {
			if p.connected.Load() {
				return 1
			}
			return 0
		}),
	)
}

// AdminAddr, InboundAddr: bound addresses (useful with port 0).
func (p *Proxy) AdminAddr() string { return p.adminLis.Addr().String() }

// HealthAddr is the bound --health-addr, or "" when it is off.
func (p *Proxy) HealthAddr() string {
	if p.healthLis == nil {
		return ""
	}
	return p.healthLis.Addr().String()
}

// InboundAddr is the bound inbound address.
func (p *Proxy) InboundAddr() string { return p.inboundLis.Addr().String() }

// UpstreamAddr is the bound address of the i-th --upstream listener.
func (p *Proxy) UpstreamAddr(i int) string { return p.upstreamLis[i].Addr().String() }

// HTTPProxyAddr is the bound HTTP proxy address ("" when off).
func (p *Proxy) HTTPProxyAddr() string {
	if p.httpProxyLis == nil {
		return ""
	}
	return p.httpProxyLis.Addr().String()
}

// DNSAddr is the bound mesh DNS address, UDP and TCP ("" when off).
func (p *Proxy) DNSAddr() string {
	if p.dns == nil {
		return ""
	}
	return p.dns.Addr()
}

// CaptureAddr is the bound outbound capture address ("" unless
// transparent).
func (p *Proxy) CaptureAddr() string {
	if p.captureLis == nil {
		return ""
	}
	return p.captureLis.Addr().String()
}

// Shutdown stops accepting, drains in-flight requests up to the drain
// timeout (or ctx), then stops the control stream and renewal.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.draining.Store(true)
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	defer cancel()
	// Both directions drain at once, each within the same budget: a long
	// inbound tunnel must not eat the outbound side's drain time.
	var errs []error
	var inErr, outErr error
	var dw sync.WaitGroup
	if p.inbound != nil {
		dw.Go(func() { inErr = p.inbound.Shutdown(dctx) })
	}
	if p.outbound != nil {
		dw.Go(func() { outErr = p.outbound.Shutdown(dctx) })
	}
	dw.Wait()
	errs = append(errs, inErr, outErr)
	if p.admin != nil {
		errs = append(errs, p.admin.Shutdown(dctx))
	}
	if p.health != nil {
		errs = append(errs, p.health.Shutdown(dctx))
	}
	if p.dns != nil {
		p.dns.Shutdown(dctx)
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.closeListeners()
	p.wg.Wait()
	p.extAuthz.Close()
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	p.tracing.Close(tctx) // export the spans still batched
	tcancel()
	// Unacknowledged audit events go to the spool (or are counted lost).
	errs = append(errs, p.events.Close())
	p.log.Info("proxy stopped")
	return errors.Join(errs...)
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// wake sends on c without blocking: a pending signal is enough.
func wake(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
