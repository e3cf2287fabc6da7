package identity

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ControlPlaneNamespace is the namespace of the control plane's own identity
// and of mesh-wide policies.
const ControlPlaneNamespace = "trellis-system"

// DefaultTrustDomain is the mesh's trust domain unless trellis control
// --trust-domain says otherwise.
const DefaultTrustDomain = "trellis.local"

// MaxBackdate is how far before "now" the CA sets a certificate's NotBefore
// and the token authority a join token's nbf, to absorb clock skew between
// the control plane and peers.
const MaxBackdate = time.Minute

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("workload id for ns %q sa %q: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// ControlPlaneID is the SPIFFE ID in the control plane's serving certificate.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ControlPlaneNamespace, "sa", ControlServiceAccount)
}

// CollectorID is the SPIFFE ID an external collector (`trellis collector`)
// holds: proxies and the control plane stream telemetry only to a peer
// proving it.
func CollectorID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ControlPlaneNamespace, "sa", CollectorServiceAccount)
}

// ParseWorkloadID parses a workload SPIFFE ID of the form
// spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func ParseWorkloadID(s string) (id spiffeid.ID, namespace, serviceAccount string, err error) {
	id, err = spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, "", "", fmt.Errorf("parse spiffe id %q: %w", s, err)
	}
	namespace, serviceAccount, ok := WorkloadPath(id)
	if !ok {
		return spiffeid.ID{}, "", "", fmt.Errorf("parse spiffe id %q: path must be /ns/<namespace>/sa/<service-account>", s)
	}
	return id, namespace, serviceAccount, nil
}

// WorkloadPath splits the path of a workload SPIFFE ID,
// /ns/<namespace>/sa/<serviceAccount>; ok is false for any other path.
// spiffeid has checked the segments' characters; whether they are DNS
// labels is the issuer's rule (internal/names), not checked here.
func WorkloadPath(id spiffeid.ID) (namespace, serviceAccount string, ok bool) {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return "", "", false
	}
	return segs[1], segs[3], true
}
