package registry

import (
	"cmp"
	"slices"
	"time"
)

// CertState is what one registered proxy last reported about its
// certificate and trust anchors: what a CA rotation waits on. It has the
// fields of meshca.ProxyCert, in order, so the control plane converts one
// to the other (the registry must not import the CA).
type CertState struct {
	Instance  string
	SPIFFEID  string
	Service   string
	Namespace string
	// Connected is false for a proxy within its grace period after its
	// stream ended; its last report still stands.
	Connected bool
	// CertIssuer is the hex SHA-256 of the DER of the CA certificate that
	// issued the proxy's certificate ("" before the first report).
	CertIssuer string
	// TrustRoots are the hex SHA-256 of the DER of each trust anchor the
	// proxy verifies peers with (a copy).
	TrustRoots []string
	// CertNotAfter is the certificate's expiry (zero before a report).
	CertNotAfter time.Time
}

// CertStates lists every registered proxy (connected or in its grace
// period) with its last reported certificate state, sorted by instance.
// The result is the caller's.
func (r *Registry[S]) CertStates() []CertState {
	r.mu.Lock()
	var none S
	out := make([]CertState, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, CertState{
			Instance:     e.w.Instance,
			SPIFFEID:     e.w.SPIFFEID,
			Service:      e.w.Service,
			Namespace:    e.w.Namespace,
			Connected:    e.stream != none,
			CertIssuer:   e.cert.Issuer,
			TrustRoots:   slices.Clone(e.cert.TrustRoots),
			CertNotAfter: e.cert.NotAfter,
		})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b CertState) int { return cmp.Compare(a.Instance, b.Instance) })
	return out
}
