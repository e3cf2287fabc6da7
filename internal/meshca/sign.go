package meshca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
)

// Typed signing errors; the gRPC edge maps them to status codes.
var (
	// ErrBadCSR: the CSR does not parse, its signature is wrong, or its key
	// type is not accepted.
	ErrBadCSR = errors.New("bad certificate signing request")
	// ErrWrongIdentity: the CSR asks for something other than the entitled
	// identity.
	ErrWrongIdentity = errors.New("csr asks for an identity the caller is not entitled to")
	// ErrCAUnavailable: the CA cannot sign now (e.g. intermediate expired).
	ErrCAUnavailable = errors.New("ca cannot sign")
)

// Leaf is a signed workload certificate with the chain to present after it.
type Leaf struct {
	Cert          *x509.Certificate
	Intermediates []*x509.Certificate // issuer first
	Roots         []*x509.Certificate
}

// SignCSR checks that csrDER is a well-formed, self-signed CSR asking for
// exactly the identity want (one URI SAN, nothing else) and signs a leaf
// valid for ttl (capped at the intermediate's expiry), backdated by
// identity.MaxBackdate for clock skew.
func (ca *CA) SignCSR(csrDER []byte, want spiffeid.ID, ttl time.Duration) (*Leaf, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: leaf lifetime %s must be positive", ErrCAUnavailable, ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if err := checkLeafKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: it requests DNS, IP or e-mail SANs; only the URI SAN %s is allowed", ErrWrongIdentity, want)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != want.String() {
		got := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			got[i] = u.String()
		}
		return nil, fmt.Errorf("%w: it requests URI SANs %q, want exactly [%s]", ErrWrongIdentity, got, want)
	}
	return ca.sign(csr.PublicKey, want, ttl, nil, nil)
}

func (ca *CA) sign(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, dnsNames []string, ips []net.IP) (*Leaf, error) {
	st := ca.current()
	now := ca.now()
	notAfter := now.Add(ttl)
	if notAfter.After(st.issuer.NotAfter) {
		notAfter = st.issuer.NotAfter
	}
	if !now.Before(st.issuer.NotAfter) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrCAUnavailable, st.issuer.NotAfter.Format(time.RFC3339))
	}
	notBefore := now.Add(-identity.MaxBackdate)
	if notBefore.Before(st.issuer.NotBefore) {
		notBefore = st.issuer.NotBefore
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCAUnavailable, err)
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.issuer, pub, st.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCAUnavailable, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCAUnavailable, err)
	}
	return &Leaf{Cert: cert, Intermediates: st.intermediates, Roots: st.roots}, nil
}

func checkLeafKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ecdsa curve %s not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("rsa key of %d bits is too short; use at least 2048", k.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T not accepted", pub)
	}
	return nil
}

// IssueServing creates a fresh ECDSA P-256 key and a certificate for a
// Trellis server (the control plane's gRPC and admin endpoints) carrying the
// given SPIFFE ID plus DNS names and IP addresses, so clients can verify it
// by hostname as well as by identity.
func (ca *CA) IssueServing(id spiffeid.ID, ttl time.Duration, dnsNames []string, ips []net.IP) (*tls.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("issue serving certificate: lifetime %s must be positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	leaf, err := ca.sign(key.Public(), id, ttl, dnsNames, ips)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	return leaf.TLSCertificate(key), nil
}

// TLSCertificate pairs the leaf and its chain with the private key.
func (l *Leaf) TLSCertificate(key crypto.Signer) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: key, Leaf: l.Cert, Certificate: [][]byte{l.Cert.Raw}}
	for _, i := range l.Intermediates {
		c.Certificate = append(c.Certificate, i.Raw)
	}
	return c
}
