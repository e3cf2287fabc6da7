// Package mtls is the mutual TLS between proxies: the Identity a proxy
// presents (its current workload certificate and trust bundle), the
// inbound's and outbound's tls.Configs (TLS 1.3 only, ALPN per carriage,
// no session resumption), the peer check (identity.VerifySVID in the
// proxy's trust domain) and secure naming (the server must prove one of
// the identities the control plane lists for the service).
//
// It must not depend on the data path's transports (internal/dataplane),
// the proxy role, the control plane, the CA or join-token signer, or the
// store (internal/deptest keeps this).
package mtls

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
	ErrNoCertificate = errors.New("no workload certificate yet")
	ErrNoBundle      = identity.ErrNoTrustBundle
	ErrNoPeerCert    = identity.ErrNoPeerCertificate
)

// PeerCertError: the peer's certificate is not a valid mesh identity.
type PeerCertError struct{ err error }

// Error implements error.
func (e *PeerCertError) Error() string { return "peer certificate: " + e.err.Error() }

// Unwrap returns the verification error.
func (e *PeerCertError) Unwrap() error { return e.err }

// NamingError is a secure naming failure: the server proxy proved an
// identity the control plane does not list for the service being called.
type NamingError struct {
	Addr string
	Got  spiffeid.ID
	Want []spiffeid.ID
}

// Error implements error.
func (e *NamingError) Error() string {
	want := make([]string, len(e.Want))
	for i, id := range e.Want {
		want[i] = id.String()
	}
	return fmt.Sprintf("secure naming: %s presented %s, want one of [%s]", e.Addr, e.Got, strings.Join(want, " "))
}

// ServerConfig is the inbound listener's config: TLS 1.3, the current
// certificate per handshake, and a client certificate verified against the
// current bundle. The client certificate is requested rather than required
// so a certless client reaches VerifyConnection and is refused with a
// reason of its own.
func ServerConfig(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{ALPNH2, ALPNHTTP1, ALPNTCP},
		// Resumed sessions skip the certificate exchange, so a renewed
		// certificate would not be presented and an expired one could
		// still be trusted; with connection reuse between proxies full
		// handshakes are rare enough to afford.
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := id.Certificate(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPeer(id, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig dials a peer proxy speaking alpn, and accepts only a
// server proving one of want (secure naming). Hostname verification does not
// apply: identity is the SPIFFE ID, checked in VerifyConnection against the
// bundle current at handshake time.
func ClientConfig(id Identity, alpn, addr string, want map[spiffeid.ID]bool, wantList []spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified in VerifyConnection, see above
		NextProtos:         []string{alpn},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := id.Certificate(); c != nil {
				return c, nil
			}
			return nil, ErrNoCertificate
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
	if err != nil && !errors.Is(err, ErrNoPeerCert) && !errors.Is(err, ErrNoBundle) {
		return spiffeid.ID{}, &PeerCertError{err}
	}
	return id, err
}
