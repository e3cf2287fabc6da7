package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// VerifyPeer returns a tls.Config.VerifyConnection func (use it with
// InsecureSkipVerify, hostnames mean nothing in the mesh) that checks the
// peer's chain against roots() and that its one URI SAN is a SPIFFE ID
// accepted by accept. what names the peer in errors ("collector").
func VerifyPeer(what string, roots func() *x509.CertPool, accept func(spiffeid.ID) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%s presented no certificate", what)
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("%s certificate: %w", what, err)
		}
		if len(leaf.URIs) != 1 {
			return fmt.Errorf("%s certificate has no single SPIFFE ID", what)
		}
		id, err := spiffeid.FromURI(leaf.URIs[0])
		if err != nil {
			return fmt.Errorf("%s certificate: %w", what, err)
		}
		if err := accept(id); err != nil {
			return fmt.Errorf("%s certificate: %w", what, err)
		}
		return nil
	}
}

// ExactID accepts only want.
func ExactID(want spiffeid.ID) func(spiffeid.ID) error {
	return func(id spiffeid.ID) error {
		if id != want {
			return fmt.Errorf("names %s, want %s", id, want)
		}
		return nil
	}
}

// errNoClientCert is returned by a GetClientCertificate with nothing to
// present.
var errNoClientCert = errors.New("no client certificate yet")

// ClientCert adapts a current-certificate func to
// tls.Config.GetClientCertificate.
func ClientCert(get func() (*tls.Certificate, error)) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := get()
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, errNoClientCert
		}
		return c, nil
	}
}
