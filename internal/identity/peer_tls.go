package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Service accounts of the Trellis system servers, in ControlPlaneNamespace.
const (
	// ControlServiceAccount is the control plane's (ControlPlaneID).
	ControlServiceAccount = "control"
	// CollectorServiceAccount is an external collector's (CollectorID):
	// create its join token with `trellis token create --service
	// collector --namespace trellis-system`.
	CollectorServiceAccount = "collector"
)

// SystemServerTLS is how a client (a proxy, a collector renewing its
// certificate, the control plane streaming to an external collector)
// verifies a Trellis system server: by its SPIFFE ID
// spiffe://<td>/ns/trellis-system/sa/<one of Accounts>, checked with
// VerifySVID against the roots of the moment, not by hostname, so any
// address of it works.
type SystemServerTLS struct {
	TrustDomain spiffeid.TrustDomain
	// Accounts are the service accounts accepted (ControlServiceAccount,
	// CollectorServiceAccount); at least one.
	Accounts []string
	// Roots returns the roots to verify with. It is called at every
	// handshake: the roots grow and shrink with a CA rotation.
	Roots func() *x509.CertPool
	// Certificate returns the client certificate to present; nil (or a
	// nil func) presents none. An error fails the handshake.
	Certificate func() (*tls.Certificate, error)
	// Hint, when set, follows a chain verification error in parentheses:
	// what the user should check ("is --ca-file the control plane's
	// ca.crt?").
	Hint string
}

// Config returns a TLS 1.3 client config applying s. It panics without
// Accounts: a config that accepts no server is a programming error.
func (s SystemServerTLS) Config() *tls.Config {
	if len(s.Accounts) == 0 {
		panic("identity.SystemServerTLS: no service account to accept")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done in VerifyConnection against Roots and the
		// server's SPIFFE ID; hostnames mean nothing here.
		InsecureSkipVerify: true,
		VerifyConnection:   s.verify,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if s.Certificate == nil {
				return &tls.Certificate{}, nil
			}
			c, err := s.Certificate()
			if err != nil {
				return nil, err
			}
			if c == nil {
				return &tls.Certificate{}, nil
			}
			return c, nil
		},
	}
}

func (s SystemServerTLS) verify(cs tls.ConnectionState) error {
	what := systemName(s.Accounts)
	id, err := VerifySVID(cs.PeerCertificates, s.Roots(), s.TrustDomain, x509.ExtKeyUsageServerAuth)
	if err != nil {
		var se *SVIDError
		switch {
		case errors.Is(err, ErrNoPeerCertificate):
			return fmt.Errorf("%s presented no certificate", what)
		case errors.As(err, &se) && se.Chain && s.Hint != "":
			return fmt.Errorf("%s certificate: %w (%s)", what, err, s.Hint)
		}
		return fmt.Errorf("%s certificate: %w", what, err)
	}
	rest, ok := strings.CutPrefix(id.Path(), "/ns/"+ControlPlaneNamespace+"/sa/")
	if !ok || !slices.Contains(s.Accounts, rest) {
		return fmt.Errorf("%s certificate names %s, not a Trellis %s (want spiffe://<trust domain>/ns/%s/sa/%s)",
			what, id, what, ControlPlaneNamespace, strings.Join(s.Accounts, " or .../sa/"))
	}
	return nil
}

// systemName names the server for error messages.
func systemName(accounts []string) string {
	var names []string
	for _, a := range accounts {
		switch a {
		case ControlServiceAccount:
			names = append(names, "control plane")
		case CollectorServiceAccount:
			names = append(names, "collector")
		default:
			names = append(names, "trellis-system/"+a)
		}
	}
	return strings.Join(names, " or ")
}
