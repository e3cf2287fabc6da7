package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Failures of VerifySVID that are not about the peer's certificate.
var (
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("peer presented no certificate")
	// ErrNoTrustBundle: there are no roots to verify against yet.
	ErrNoTrustBundle = errors.New("no trust bundle yet")
)

// SVIDError is a peer certificate that is not a valid X.509-SVID for the
// use checked. Its message is the reason alone; callers add who the peer is.
type SVIDError struct {
	// Chain reports that the chain did not verify (unknown authority,
	// expired, wrong extended key usage), as opposed to a leaf that is not
	// shaped like an SVID or names another trust domain.
	Chain bool
	Err   error
}

func (e *SVIDError) Error() string { return e.Err.Error() }
func (e *SVIDError) Unwrap() error { return e.Err }

// VerifySVID checks that certs, a TLS peer's certificates as presented
// (leaf first, then the intermediates it sent), are an X.509-SVID of trust
// domain td valid for usage, and returns the SPIFFE ID. It is the one peer
// check of the mesh: proxies in both directions, the control plane, the
// collectors and every client of a Trellis system server call it, so they
// all apply the same rules:
//
//   - the leaf is not a CA certificate, carries the digitalSignature key
//     usage and neither keyCertSign nor cRLSign;
//   - the chain verifies to roots now, with usage among the extended key
//     usages of every certificate on it (x509.ExtKeyUsageServerAuth for a
//     server peer, x509.ExtKeyUsageClientAuth for a client);
//   - the leaf has exactly one URI SAN, a SPIFFE ID in td.
//
// What that ID may do (secure naming, which system account) is the caller's
// check. A failure is ErrNoPeerCertificate, ErrNoTrustBundle (roots nil) or
// an *SVIDError.
//
// go-spiffe's x509svid.Verify is not used: it accepts any extended key
// usage, and takes the bundle per trust domain as certificates where the
// data plane holds a pool.
func VerifySVID(certs []*x509.Certificate, roots *x509.CertPool, td spiffeid.TrustDomain, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, ErrNoPeerCertificate
	}
	if roots == nil {
		return spiffeid.ID{}, ErrNoTrustBundle
	}
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("verify svid: no trust domain to check the peer against")
	}
	leaf := certs[0]
	switch {
	case leaf.IsCA:
		return spiffeid.ID{}, &SVIDError{Err: errors.New("leaf is a CA certificate")}
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return spiffeid.ID{}, &SVIDError{Err: errors.New("leaf lacks the digitalSignature key usage")}
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return spiffeid.ID{}, &SVIDError{Err: errors.New("leaf has a certificate or CRL signing key usage")}
	}
	opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return spiffeid.ID{}, &SVIDError{Chain: true, Err: err}
	}
	id, err := SPIFFEIDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, &SVIDError{Err: err}
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, &SVIDError{Err: fmt.Errorf("%s is not in trust domain %s", id, td)}
	}
	return id, nil
}

// SPIFFEIDFromCert returns the single SPIFFE URI SAN of a certificate. It
// checks nothing else: use it on a chain VerifySVID accepted.
func SPIFFEIDFromCert(c *x509.Certificate) (spiffeid.ID, error) {
	if len(c.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(c.URIs))
	}
	return spiffeid.FromURI(c.URIs[0])
}

// CertID names a certificate the way the config stream does (Snapshot.issuer,
// Report.cert_issuer, Report.trust_roots): hex SHA-256 of its DER.
func CertID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
