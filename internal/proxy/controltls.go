package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
)

// Service accounts in trellis-system that a proxy dials: the control plane
// (config, certificates, and telemetry when it embeds the collector) and an
// external collector (`trellis collector`).
const (
	saControl   = "control"
	saCollector = identity.CollectorServiceAccount
)

// controlTLSConfig verifies a Trellis system server (the control plane, an
// external collector) by its SPIFFE identity
// spiffe://<td>/ns/trellis-system/sa/<account>, one of accounts, chained to
// roots, not by hostname, so any address of it works. client returns the
// certificate to present (nil for none).
func controlTLSConfig(roots *x509.CertPool, client func() *tls.Certificate, accounts ...string) *tls.Config {
	return controlTLSConfigFrom(func() *x509.CertPool { return roots }, client, accounts...)
}

// controlTLSConfigFrom is controlTLSConfig with the roots read at every
// handshake: they grow when a root rotation brings a new root (see
// CertManager.ControlRoots).
func controlTLSConfigFrom(roots func() *x509.CertPool, client func() *tls.Certificate, accounts ...string) *tls.Config {
	if len(accounts) == 0 {
		panic("controlTLSConfig: no service account to accept")
	}
	what := systemName(accounts)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done in VerifyConnection against roots and the
		// server's SPIFFE ID; hostnames mean nothing here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%s presented no certificate", what)
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots(), Intermediates: inter}); err != nil {
				return fmt.Errorf("%s certificate: %w (is --ca-file the control plane's ca.crt?)", what, err)
			}
			if len(leaf.URIs) != 1 {
				return fmt.Errorf("%s certificate has no single SPIFFE ID", what)
			}
			id, err := spiffeid.FromURI(leaf.URIs[0])
			if err != nil || !acceptsSystemID(id, accounts) {
				return fmt.Errorf("%s certificate names %s, not a Trellis %s (want spiffe://<trust domain>/ns/%s/sa/%s)",
					what, leaf.URIs[0], what, identity.ControlPlaneNamespace, strings.Join(accounts, " or .../sa/"))
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := client(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
	}
}

// controlRoots verifies the control plane: Roots (--ca-file) and the roots
// the certificate manager learned since (see CertManager.ControlRoots).
func (c *ControlClient) controlRoots() *x509.CertPool {
	if c.Certs == nil {
		return c.Roots
	}
	return c.Certs.controlRootsWith(c.Roots)
}

// acceptsSystemID reports whether id is /ns/trellis-system/sa/<one of
// accounts>.
func acceptsSystemID(id spiffeid.ID, accounts []string) bool {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/"+identity.ControlPlaneNamespace+"/sa/")
	return ok && slices.Contains(accounts, rest)
}

// systemName names the server for error messages.
func systemName(accounts []string) string {
	var names []string
	for _, a := range accounts {
		switch a {
		case saControl:
			names = append(names, "control plane")
		case saCollector:
			names = append(names, "collector")
		default:
			names = append(names, "trellis-system/"+a)
		}
	}
	return strings.Join(names, " or ")
}

// collectorAccounts are the identities the telemetry stream accepts at
// addr: an explicit --collector may be the control plane or an external
// collector; otherwise the control plane's address means the control plane
// (which embeds the collector) and any other address, from the mesh's
// collector_address, an external collector.
func collectorAccounts(flagAddr, controlAddr, addr string) []string {
	switch {
	case flagAddr != "":
		return []string{saControl, saCollector}
	case addr == controlAddr:
		return []string{saControl}
	default:
		return []string{saCollector}
	}
}
