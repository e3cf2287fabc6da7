package proxy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/servingcert"
)

// GatewayConfig makes a Proxy an ingress gateway (`trellis gateway`): no
// app and no HTTP proxy, but HTTPS and HTTP listeners for clients outside
// the mesh, routed by GatewayRoutes (docs/gateway.md).
type GatewayConfig struct {
	// ListenHTTPS (--listen-https) serves TLS with Certs; "" is off.
	ListenHTTPS string
	// ListenHTTP (--listen-http) serves plain HTTP; "" is off.
	ListenHTTP string
	// Certs are the --tls-cert/--tls-key pairs, chosen by SNI.
	Certs []servingcert.Pair
	// RedirectHTTP (--redirect-http) answers plain HTTP with a 308 to
	// https.
	RedirectHTTP bool
	// CertReloadInterval is how often the certificate files are checked
	// for changes; zero means DefaultCertReloadInterval.
	CertReloadInterval time.Duration
}

// DefaultCertReloadInterval is how often a gateway looks at its
// certificate files.
const DefaultCertReloadInterval = 2 * time.Second

func (c *Config) setGatewayDefaults() {
	g := c.Gateway
	if g == nil {
		return
	}
	c.Labels = maps.Clone(c.Labels)
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	c.Labels[resource.GatewayRoleLabel] = resource.GatewayRoleValue
	if c.HTTPProxyAddr == "" {
		c.HTTPProxyAddr = "off"
	}
	if c.InboundAddr == "" {
		// Nothing dials a gateway: its inbound listener only exists.
		c.InboundAddr = "127.0.0.1:0"
	}
	if g.CertReloadInterval == 0 {
		g.CertReloadInterval = DefaultCertReloadInterval
	}
}

func (c *Config) validateGateway() error {
	g := c.Gateway
	if g == nil {
		return nil
	}
	if c.AppAddr != "" {
		return errors.New("a gateway has no app: drop --app-addr")
	}
	if g.ListenHTTPS == "" && g.ListenHTTP == "" {
		return errors.New("a gateway needs a listener: --listen-https with --tls-cert and --tls-key, or --listen-http")
	}
	for _, a := range []struct{ flag, addr string }{{"--listen-https", g.ListenHTTPS}, {"--listen-http", g.ListenHTTP}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT, e.g. :8443", a.flag, a.addr)
		}
	}
	if g.ListenHTTPS != "" && len(g.Certs) == 0 {
		return errors.New("--listen-https needs a certificate: --tls-cert FILE --tls-key FILE (repeat the pair for more names)")
	}
	if g.ListenHTTPS == "" && len(g.Certs) > 0 {
		return errors.New("--tls-cert without --listen-https: say where HTTPS listens, e.g. --listen-https :8443")
	}
	if g.RedirectHTTP && (g.ListenHTTP == "" || g.ListenHTTPS == "") {
		return errors.New("--redirect-http needs both --listen-http and --listen-https")
	}
	if g.CertReloadInterval < 0 {
		return fmt.Errorf("certificate reload interval %v: want a positive duration", g.CertReloadInterval)
	}
	return nil
}

// gatewayListeners binds the gateway's listeners and loads its
// certificates.
func (p *Proxy) gatewayListeners() error {
	g := p.cfg.Gateway
	if g == nil {
		return nil
	}
	var err error
	if g.ListenHTTPS != "" {
		if p.certStore, err = servingcert.Load(g.Certs, p.log); err != nil {
			return err
		}
		if p.gwHTTPSLis, err = net.Listen("tcp", g.ListenHTTPS); err != nil {
			return fmt.Errorf("--listen-https %s: %w", g.ListenHTTPS, err)
		}
	}
	if g.ListenHTTP != "" {
		if p.gwHTTPLis, err = net.Listen("tcp", g.ListenHTTP); err != nil {
			return fmt.Errorf("--listen-http %s: %w", g.ListenHTTP, err)
		}
	}
	return nil
}

// startGateway serves the gateway's listeners on the outbound side.
func (p *Proxy) startGateway() {
	g := p.cfg.Gateway
	if g == nil {
		return
	}
	gc := dataplane.GatewayConfig{RedirectHTTP: g.RedirectHTTP, Authorizer: p.authz}
	if pa, ok := p.authz.(*admission.PolicyAuthorizer); ok && p.cfg.Authorizer == nil {
		pa.Ingress = true
	}
	if p.certStore != nil {
		gc.TLS = p.certStore.TLSConfig()
		if _, port, err := net.SplitHostPort(p.gwHTTPSLis.Addr().String()); err == nil {
			gc.HTTPSPort, _ = strconv.Atoi(port)
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.certStore.Watch(p.runCtx, g.CertReloadInterval) }()
	}
	gw := dataplane.NewGateway(p.outbound, gc)
	if p.gwHTTPSLis != nil {
		p.goServe("gateway https", func() error { return gw.ServeTLS(p.gwHTTPSLis) })
	}
	if p.gwHTTPLis != nil {
		p.goServe("gateway http", func() error { return gw.ServePlain(p.gwHTTPLis) })
	}
	p.log.Info("gateway serving", "https", addrOf(p.gwHTTPSLis), "http", addrOf(p.gwHTTPLis), "redirect_http", g.RedirectHTTP)
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// GatewayHTTPSAddr is the gateway's HTTPS listener's address, "" when off.
func (p *Proxy) GatewayHTTPSAddr() string { return addrOf(p.gwHTTPSLis) }

// GatewayHTTPAddr is the gateway's plain-HTTP listener's address, "" when
// off.
func (p *Proxy) GatewayHTTPAddr() string { return addrOf(p.gwHTTPLis) }

// CertReloads counts the gateway's certificate reloads.
func (p *Proxy) CertReloads() int64 {
	if p.certStore == nil {
		return 0
	}
	return p.certStore.Reloads()
}
