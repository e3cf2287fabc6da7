package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// controlTLSConfig verifies the control plane by its SPIFFE identity
// (spiffe://<td>/ns/trellis-system/sa/control) chained to roots, not by
// hostname, so any address of it works. client returns the certificate to
// present (nil for none).
func controlTLSConfig(roots *x509.CertPool, client func() *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done in VerifyConnection against roots and the
		// control plane's SPIFFE ID; hostnames mean nothing here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("control plane presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return fmt.Errorf("control plane certificate: %w (is --ca-file the control plane's ca.crt?)", err)
			}
			if len(leaf.URIs) != 1 {
				return errors.New("control plane certificate has no single SPIFFE ID")
			}
			id, err := spiffeid.FromURI(leaf.URIs[0])
			if err != nil || !strings.HasSuffix(id.Path(), "/ns/trellis-system/sa/control") {
				return fmt.Errorf("control plane certificate names %s, not a Trellis control plane", leaf.URIs[0])
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
