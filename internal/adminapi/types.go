package adminapi

import (
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Paths of the admin API. Every path under /api/ needs a bearer token.
const (
	PathApply    = "/api/v1/apply"
	PathTokens   = "/api/v1/tokens"
	PathResource = "/api/v1/resources" // /{plural}[/{namespace}]/{name}
	PathHealthz  = "/healthz"
	PathReadyz   = "/readyz"
	PathMetrics  = "/metrics"
)

// ApplyRequest creates or updates a batch of resources atomically: either
// every object is stored or none is.
type ApplyRequest struct {
	Objects []resource.Object `json:"objects"`
	// DryRun validates and reports what would happen without storing.
	DryRun bool `json:"dryRun,omitempty"`
}

// Apply results.
const (
	ResultCreated    = "created"
	ResultConfigured = "configured"
	ResultUnchanged  = "unchanged"
)

// ApplyResult says what happened to one object.
type ApplyResult struct {
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	Result          string `json:"result"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// ApplyResponse lists results in request order.
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
}

// ListResponse holds resources in key order (namespace, then name).
type ListResponse struct {
	Items []resource.Object `json:"items"`
}

// DeleteResponse names what was deleted.
type DeleteResponse struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// CreateTokenRequest asks for a join token. Namespace defaults to
// "default", ServiceAccount to Service, TTL (a Go duration) to 24h.
type CreateTokenRequest struct {
	Service        string `json:"service"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	TTL            string `json:"ttl,omitempty"`
}

// TokenInfo describes an issued join token; it never holds the token itself.
type TokenInfo struct {
	ID             string     `json:"id"`
	SPIFFEID       string     `json:"spiffeID"`
	Service        string     `json:"service"`
	Namespace      string     `json:"namespace"`
	ServiceAccount string     `json:"serviceAccount"`
	IssuedAt       time.Time  `json:"issuedAt"`
	ExpiresAt      time.Time  `json:"expiresAt"`
	RevokedAt      *time.Time `json:"revokedAt,omitempty"`
}

// CreateTokenResponse carries the token, shown once.
type CreateTokenResponse struct {
	Token string    `json:"token"`
	Info  TokenInfo `json:"info"`
}

// TokenListResponse lists issued tokens.
type TokenListResponse struct {
	Items []TokenInfo `json:"items"`
}

// ErrorDetail is one problem with one object of a request.
type ErrorDetail struct {
	// Index of the object in the request, -1 when not about one object.
	Index    int    `json:"index"`
	Resource string `json:"resource,omitempty"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error   string        `json:"error"`
	Details []ErrorDetail `json:"details,omitempty"`
}
