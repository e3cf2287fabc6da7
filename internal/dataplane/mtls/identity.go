package mtls

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Identity is the proxy's current workload certificate and trust anchors.
// Implementations are safe for concurrent use; values returned are
// immutable and may be retained only for one handshake.
type Identity interface {
	// ID is the workload's SPIFFE ID.
	ID() spiffeid.ID
	// Certificate returns the current leaf with its chain and key, or nil
	// before the first certificate is obtained.
	Certificate() *tls.Certificate
	// Bundle returns the trust anchors peers are verified with.
	Bundle() *x509.CertPool
}

// StaticIdentity is a fixed Identity, for tests and tools.
type StaticIdentity struct {
	SPIFFEID spiffeid.ID
	Cert     *tls.Certificate
	Roots    *x509.CertPool
}

// ID implements Identity.
func (s *StaticIdentity) ID() spiffeid.ID { return s.SPIFFEID }

// Certificate implements Identity.
func (s *StaticIdentity) Certificate() *tls.Certificate { return s.Cert }

// Bundle implements Identity.
func (s *StaticIdentity) Bundle() *x509.CertPool { return s.Roots }

// NoIdentity stands in for a missing Identity: every handshake fails with
// "no workload certificate yet" rather than the proxy crashing.
type NoIdentity struct{}

// ID implements Identity.
func (NoIdentity) ID() spiffeid.ID { return spiffeid.ID{} }

// Certificate implements Identity.
func (NoIdentity) Certificate() *tls.Certificate { return nil }

// Bundle implements Identity.
func (NoIdentity) Bundle() *x509.CertPool { return nil }

// ALPN protocols between proxies. h2 carries HTTP, multiplexed; http/1.1
// carries only Upgrade requests (WebSocket), which h2 cannot; trellis-tcp/1
// carries one opaque TCP stream per TLS connection.
const (
	ALPNH2    = "h2"
	ALPNHTTP1 = "http/1.1"
	ALPNTCP   = "trellis-tcp/1"
)
