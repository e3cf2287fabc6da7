package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Handshake failures the inbound side tells apart in its metrics, and the
// outbound side in its 503s.
var (
	errNoCertificate = errors.New("no workload certificate yet")
	errNoBundle      = errors.New("no trust bundle yet")
	errNoPeerCert    = errors.New("peer presented no certificate")
)

// peerCertError: the peer's certificate is not a valid mesh identity.
type peerCertError struct{ err error }

func (e *peerCertError) Error() string { return "peer certificate: " + e.err.Error() }
func (e *peerCertError) Unwrap() error { return e.err }

// NamingError is a secure naming failure: the server proxy proved an
// identity the control plane does not list for the service being called.
type NamingError struct {
	Addr string
	Got  spiffeid.ID
	Want []spiffeid.ID
}

func (e *NamingError) Error() string {
	want := make([]string, len(e.Want))
	for i, id := range e.Want {
		want[i] = id.String()
	}
	return fmt.Sprintf("secure naming: %s presented %s, want one of [%s]", e.Addr, e.Got, strings.Join(want, " "))
}

// serverTLSConfig is the inbound listener's config: TLS 1.3, the current
// certificate per handshake, and a client certificate verified against the
// current bundle. The client certificate is requested rather than required
// so a certless client reaches VerifyConnection and is refused with a
// reason of its own.
func serverTLSConfig(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{alpnH2, alpnHTTP1, alpnTCP},
		// Resumed sessions skip the certificate exchange, so a renewed
		// certificate would not be presented and an expired one could
		// still be trusted; with connection reuse between proxies full
		// handshakes are rare enough to afford.
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := id.Certificate(); c != nil {
				return c, nil
			}
			return nil, errNoCertificate
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPeer(id, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// clientTLSConfig dials a peer proxy speaking alpn, and accepts only a
// server proving one of want (secure naming). Hostname verification does not
// apply: identity is the SPIFFE ID, checked in VerifyConnection against the
// bundle current at handshake time.
func clientTLSConfig(id Identity, alpn, addr string, want map[spiffeid.ID]bool, wantList []spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified in VerifyConnection, see above
		NextProtos:         []string{alpn},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := id.Certificate(); c != nil {
				return c, nil
			}
			return nil, errNoCertificate
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := verifyPeer(id, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !want[got] {
				return &NamingError{Addr: addr, Got: got, Want: wantList}
			}
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("peer %s negotiated protocol %q, want %q", addr, cs.NegotiatedProtocol, alpn)
			}
			return nil
		},
	}
}

// verifyPeer checks a peer chain against the current trust bundle and
// returns its SPIFFE ID: exactly one URI SAN, in our trust domain, on a
// non-CA leaf.
func verifyPeer(self Identity, certs []*x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errNoPeerCert
	}
	bundle := self.Bundle()
	if bundle == nil {
		return spiffeid.ID{}, errNoBundle
	}
	leaf := certs[0]
	if leaf.IsCA {
		return spiffeid.ID{}, &peerCertError{errors.New("leaf is a CA certificate")}
	}
	opts := x509.VerifyOptions{Roots: bundle, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return spiffeid.ID{}, &peerCertError{err}
	}
	id, err := peerID(leaf)
	if err != nil {
		return spiffeid.ID{}, &peerCertError{err}
	}
	if own := self.ID(); !own.IsZero() && id.TrustDomain() != own.TrustDomain() {
		return spiffeid.ID{}, &peerCertError{fmt.Errorf("%s is not in trust domain %s", id, own.TrustDomain())}
	}
	return id, nil
}

// peerID is the single SPIFFE URI SAN of a certificate.
func peerID(c *x509.Certificate) (spiffeid.ID, error) {
	if len(c.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(c.URIs))
	}
	return spiffeid.FromURI(c.URIs[0])
}
