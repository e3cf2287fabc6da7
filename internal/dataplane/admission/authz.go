package admission

import (
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Request is what an authorization decision sees: a whole TCP connection or
// one HTTP request.
type Request struct {
	// Source is the caller's SPIFFE ID; zero for a plaintext caller
	// (PERMISSIVE mode).
	Source spiffeid.ID
	// Principal is Source as a string ("" for plaintext); set it to spare
	// the decision a conversion.
	Principal string
	// Protocol is the inbound protocol: http, http2, grpc or tcp.
	Protocol string
	// HTTP fields; empty for TCP.
	Method string
	Path   string
	Host   string
	Header http.Header
	// GetHeader, when Header is nil, looks a header up (the HTTP/1.1 fast
	// path's parsed fields). Either is valid during Authorize only; use
	// HeaderValue.
	GetHeader func(name string) string
	// RequestPrincipal ("ISSUER/SUBJECT") and Claim are the end user's
	// verified token's (the authenticate step); empty without one.
	RequestPrincipal string
	Claim            func(name string) []string
}

// HeaderValue returns the first value of a request header, from Header
// or GetHeader.
func (r *Request) HeaderValue(name string) string {
	if r.Header != nil {
		return r.Header.Get(name)
	}
	if r.GetHeader != nil {
		return r.GetHeader(name)
	}
	return ""
}

// Decision is an authorization outcome.
type Decision struct {
	Allow bool
	// Policy names the deciding policy ("namespace/name"), or "" when the
	// mesh default decided.
	Policy string
	// Rule is the matching rule's index in Policy, or -1.
	Rule   int
	Reason string
	// AuditDenied names the first audit-mode policy ("namespace/name")
	// that would have denied the request, or "" (spans' decision
	// "audit").
	AuditDenied string
}

// Authorizer decides inbound requests. This is where the policy engine plugs
// in: it compiles snap.Policies once per snapshot and decides per request.
// Implementations must be safe for concurrent use and must not block.
type Authorizer interface {
	Authorize(snap *meshconfig.Snapshot, req *Request) Decision
}

// MeshDefaultAuthorizer enforces only Mesh.spec.authorization.default: the
// behaviour until the policy engine lands.
type MeshDefaultAuthorizer struct{}

// Authorize allows when the mesh default is allow.
func (MeshDefaultAuthorizer) Authorize(snap *meshconfig.Snapshot, _ *Request) Decision {
	if snap != nil && snap.AuthzDefault == "allow" {
		return Decision{Allow: true, Reason: "mesh default allow"}
	}
	return Decision{Allow: false, Reason: "mesh default deny"}
}
