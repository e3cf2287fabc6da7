package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// Service accounts in trellis-system that a proxy dials: the control plane
// (config, certificates, and telemetry when it embeds the collector) and an
// external collector (`trellis collector`).
const (
	saControl   = identity.ControlServiceAccount
	saCollector = identity.CollectorServiceAccount
)

// systemTLS verifies a Trellis system server (the control plane, an
// external collector) of trust domain td by its SPIFFE identity
// spiffe://<td>/ns/trellis-system/sa/<account>, one of accounts, chained to
// roots() at each handshake (they change with a root rotation), not by
// hostname. client returns the certificate to present (nil for none).
func systemTLS(td spiffeid.TrustDomain, roots func() *x509.CertPool, client func() *tls.Certificate, accounts ...string) *tls.Config {
	return identity.SystemServerTLS{
		TrustDomain: td,
		Accounts:    accounts,
		Roots:       roots,
		Certificate: func() (*tls.Certificate, error) { return client(), nil },
		Hint:        workloadcert.CAFileHint,
	}.Config()
}

// collectorAccounts are the identities the telemetry stream accepts at
// addr: an explicit --collector may be the control plane or an external
// collector; otherwise the control plane's target or one of its addresses
// (control: see controlDialTarget) means the control plane (which embeds
// the collector) and any other address, from the mesh's
// collector_address, an external collector.
func collectorAccounts(flagAddr string, control []string, addr string) []string {
	switch {
	case flagAddr != "":
		return []string{saControl, saCollector}
	case slices.Contains(control, addr):
		return []string{saControl}
	default:
		return []string{saCollector}
	}
}
