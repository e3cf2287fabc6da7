package adminapi

import (
	"context"
	"net/http"
	"time"
)

// Paths of the CA lifecycle endpoints.
const (
	PathCA          = "/api/v1/ca"            // GET: CAStatus
	PathCARotate    = "/api/v1/ca/rotate"     // POST: CAChangeResponse
	PathCARetireOld = "/api/v1/ca/retire-old" // POST: CAChangeResponse; 409 while a proxy depends on an old root
)

// CARoot is one root of the trust bundle.
type CARoot struct {
	// ID is the hex SHA-256 of the root's DER, as proxies report it
	// (Report.trust_roots).
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// Active: the signing intermediate chains to this root.
	Active bool `json:"active"`
}

// CAIssuer is the intermediate that signs workload certificates now.
type CAIssuer struct {
	// ID is the hex SHA-256 of its DER (Snapshot.issuer, Report.cert_issuer).
	ID       string    `json:"id"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
}

// CAProxy is one registered proxy that is not done with a rotation.
type CAProxy struct {
	Instance  string `json:"instance"`
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	SPIFFEID  string `json:"spiffeId"`
	Connected bool   `json:"connected"`
	// CertIssuer is the ID of the intermediate that issued the proxy's
	// certificate ("" before its first report).
	CertIssuer   string     `json:"certIssuer,omitempty"`
	CertNotAfter *time.Time `json:"certNotAfter,omitempty"`
	// Lacks says what the proxy does not have yet, in words.
	Lacks []string `json:"lacks"`
	// BlocksRetire: it lacks a certificate from the active intermediate or
	// the active root, so retire-old is refused while it is registered.
	BlocksRetire bool `json:"blocksRetire"`
}

// CAProgress is how far the registered proxies are with the current CA.
type CAProgress struct {
	// Connected counts connected proxies; Done those of them whose
	// certificate comes from the active intermediate and that trust every
	// root of the bundle.
	Connected int `json:"connected"`
	Done      int `json:"done"`
	// Pending are registered proxies (connected or within their grace
	// period) that are not done, sorted by namespace, service, instance;
	// at most MaxCAPending of them, PendingTotal counts all.
	Pending      []CAProxy `json:"pending,omitempty"`
	PendingTotal int       `json:"pendingTotal"`
	// Blocking counts the registered proxies that keep retire-old from
	// being accepted (BlocksRetire).
	Blocking int `json:"blocking"`
}

// MaxCAPending bounds CAProgress.Pending.
const MaxCAPending = 100

// CAStatus answers GET /api/v1/ca.
type CAStatus struct {
	// External: the intermediate comes from the user's PKI
	// (--ca-cert/--ca-key) and Trellis cannot rotate it.
	External bool `json:"external"`
	// Rotating: the bundle holds more than one root.
	Rotating bool `json:"rotating"`
	// Roots is the trust bundle, oldest first.
	Roots  []CARoot `json:"roots"`
	Issuer CAIssuer `json:"issuer"`
	// CanRetire: retire-old would be accepted now.
	CanRetire bool       `json:"canRetire"`
	Proxies   CAProgress `json:"proxies"`
}

// CAChangeResponse answers a rotation or a retirement: the roots added or
// dropped, and the status after the change.
type CAChangeResponse struct {
	Added   []CARoot `json:"added,omitempty"`
	Retired []CARoot `json:"retired,omitempty"`
	Status  CAStatus `json:"status"`
}

// CAStatus reads the CA's roots, issuer and the proxies' progress.
func (c *Client) CAStatus(ctx context.Context) (CAStatus, error) {
	var out CAStatus
	err := c.do(ctx, http.MethodGet, PathCA, nil, &out)
	return out, err
}

// RotateCA starts a root rotation.
func (c *Client) RotateCA(ctx context.Context) (CAChangeResponse, error) {
	var out CAChangeResponse
	err := c.do(ctx, http.MethodPost, PathCARotate, nil, &out)
	return out, err
}

// RetireOldCA drops every root but the active one; refused (409) while a
// registered proxy still depends on an old root.
func (c *Client) RetireOldCA(ctx context.Context) (CAChangeResponse, error) {
	var out CAChangeResponse
	err := c.do(ctx, http.MethodPost, PathCARetireOld, nil, &out)
	return out, err
}
