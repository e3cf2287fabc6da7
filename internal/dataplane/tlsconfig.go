package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
)

// Handshake failures the inbound side tells apart in its metrics, and the
// outbound side in its 503s.
var (
	errNoCertificate = errors.New("no workload certificate yet")
	errNoBundle      = identity.ErrNoTrustBundle
	errNoPeerCert    = identity.ErrNoPeerCertificate
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

// verifyPeer checks a peer chain with identity.VerifySVID against the
// current trust bundle, in our trust domain, and returns its SPIFFE ID.
func verifyPeer(self Identity, certs []*x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	id, err := identity.VerifySVID(certs, self.Bundle(), self.ID().TrustDomain(), usage)
	if err != nil && !errors.Is(err, errNoPeerCert) && !errors.Is(err, errNoBundle) {
		return spiffeid.ID{}, &peerCertError{err}
	}
	return id, err
}
