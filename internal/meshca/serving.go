package meshca

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/identity"
)

// servingTTL is the lifetime of the control plane's own serving
// certificate; it is reissued in memory at half its life.
const servingTTL = 30 * 24 * time.Hour

// ServingCert issues and caches the control plane's serving certificate,
// reissuing it when half its life has passed. Safe for concurrent use.
type ServingCert struct {
	ca    *CA
	now   func() time.Time
	dns   []string
	ips   []net.IP
	mu    sync.Mutex
	cert  *tls.Certificate
	renew time.Time
}

// NewServingCert issues the serving certificate of a control plane
// listening on addrs (host:port): it names localhost, the loopback
// addresses and each host (every local address for an unspecified one).
func NewServingCert(ca *CA, now func() time.Time, addrs ...string) (*ServingCert, error) {
	sc := &ServingCert{ca: ca, now: now, dns: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ip := net.ParseIP(host)
		switch {
		case ip == nil && host != "":
			sc.dns = append(sc.dns, host)
		case ip != nil && ip.IsUnspecified():
			// Listening everywhere: name every local address.
			if ifAddrs, err := net.InterfaceAddrs(); err == nil {
				for _, ia := range ifAddrs {
					if n, ok := ia.(*net.IPNet); ok {
						sc.ips = append(sc.ips, n.IP)
					}
				}
			}
		case ip != nil:
			sc.ips = append(sc.ips, ip)
		}
	}
	if _, err := sc.Get(); err != nil {
		return nil, err
	}
	return sc, nil
}

// Get returns the current certificate, reissuing it when due. When a
// reissue fails it keeps serving the last one.
func (sc *ServingCert) Get() (*tls.Certificate, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.cert != nil && sc.now().Before(sc.renew) {
		return sc.cert, nil
	}
	c, err := sc.ca.IssueServing(identity.ControlPlaneID(sc.ca.TrustDomain()), servingTTL, sc.dns, sc.ips)
	if err != nil {
		if sc.cert != nil {
			return sc.cert, nil
		}
		return nil, fmt.Errorf("control plane serving certificate: %w", err)
	}
	sc.cert = c
	sc.renew = c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
	return c, nil
}

// Invalidate makes the next handshake reissue the certificate, from the
// CA's current intermediate (after a rotation or retirement). Until the
// reissue succeeds the old certificate is served.
func (sc *ServingCert) Invalidate() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.renew = time.Time{}
}

// TLSConfig serves with the rotating certificate. Client certificates are
// requested and, when given, verified with identity.VerifySVID against the
// mesh roots of the moment (every root of the trust bundle, so during a
// root rotation proxies still holding a certificate from the old
// intermediate can renew); they are not required, because a joining proxy
// has none yet.
func (sc *ServingCert) TLSConfig(withClientCerts bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sc.Get() },
	}
	if withClientCerts {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = sc.ca.RootPool()
		base := cfg.Clone()
		// The bundle changes with a rotation: each handshake takes the
		// current one.
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			roots := sc.ca.RootPool()
			c.ClientCAs = roots
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil
				}
				if _, err := identity.VerifySVID(cs.PeerCertificates, roots, sc.ca.TrustDomain(), x509.ExtKeyUsageClientAuth); err != nil {
					return fmt.Errorf("client certificate: %w", err)
				}
				return nil
			}
			return c, nil
		}
	}
	return cfg
}
