package adminapi

import (
	"encoding/json"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// Paths of the admin API. Every path under /api/ needs a bearer token.
const (
	PathApply    = "/api/v1/apply"
	PathTokens   = "/api/v1/tokens"
	PathResource = "/api/v1/resources" // /{plural}[/{namespace}]/{name}
	PathProxies  = "/api/v1/proxies"   // ?namespace=NS; /{instance} for one
	PathServices = "/api/v1/services"  // ?namespace=NS
	PathGraph    = "/api/v1/graph"     // ?window=1m
	PathShapes   = "/api/v1/shapes"    // ?namespace=NS
	PathAlerts   = "/api/v1/alerts"    // ?since=RFC3339
	PathHealthz  = "/healthz"
	PathReadyz   = "/readyz"
	PathMetrics  = "/metrics"
)

// PathAdminTokens is the admin tokens' collection; /{name} for one.
const PathAdminTokens = "/api/v1/admin-tokens"

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
	// Changes lists, for a configured object, the fields that differ from
	// the stored version the apply replaced (or, in a dry run, would
	// replace), in schema order. Empty for created and unchanged objects.
	Changes []resource.FieldChange `json:"changes,omitempty"`
	// Warnings are accepted things the caller should know about, such as
	// an Intent that calls a service no workload has registered.
	Warnings []string `json:"warnings,omitempty"`
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

// Proxy sync states, as `trellis status` shows them. Only ProxySynced is
// healthy; ProxySyncing is a transition that either settles or turns into
// ProxyStale or ProxyDrifted.
const (
	// ProxySynced: the proxy acknowledged the content last sent to it and,
	// if it reported since, runs that content.
	ProxySynced = "SYNCED"
	// ProxySyncing: a snapshot was sent and is not answered yet, but only
	// for less than the control plane's ack timeout; or the proxy
	// acknowledged it but reports running something else, for less than
	// the drift grace period.
	ProxySyncing = "SYNCING"
	// ProxyStale: a snapshot was sent and not answered within the ack
	// timeout.
	ProxyStale = "STALE"
	// ProxyNacked: the proxy rejected the snapshot last sent to it and
	// keeps serving its last good one; Error says why.
	ProxyNacked = "NACKED"
	// ProxyDrifted: the proxy acknowledged the desired snapshot but has
	// reported running other content for longer than the drift grace
	// period; the control plane re-sends the snapshot (DriftRepairs).
	ProxyDrifted = "DRIFTED"
	// ProxyDisconnected: the proxy's config stream is down; its endpoint
	// stays in other proxies' snapshots until the grace period ends.
	ProxyDisconnected = "DISCONNECTED"
	// ProxyRestored: known from the registry the control plane saved
	// before it restarted, awaiting its proxy's reconnect; its endpoint
	// stays in other proxies' snapshots until the restore grace period
	// ends.
	ProxyRestored = "RESTORED"
)

// ProxyStates lists every proxy state, healthiest first.
func ProxyStates() []string {
	return []string{ProxySynced, ProxySyncing, ProxyStale, ProxyNacked, ProxyDrifted, ProxyRestored, ProxyDisconnected}
}

// ConfigVersion names one snapshot content and when it was sent,
// acknowledged or reported.
type ConfigVersion struct {
	Version string    `json:"version"`
	Hash    string    `json:"hash,omitempty"`
	At      time.Time `json:"at"`
}

// NackInfo is the last snapshot version a proxy rejected.
type NackInfo struct {
	Version string    `json:"version"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// ProxyInfo is one proxy instance the control plane knows: connected, or
// disconnected within the endpoint grace period.
type ProxyInfo struct {
	// Instance identifies the proxy process across reconnects.
	Instance      string            `json:"instance"`
	SPIFFEID      string            `json:"spiffeID"`
	Service       string            `json:"service"`
	Namespace     string            `json:"namespace"`
	AdvertiseAddr string            `json:"advertiseAddr,omitempty"`
	Protocol      string            `json:"protocol"`
	Labels        map[string]string `json:"labels,omitempty"`
	ProxyVersion  string            `json:"proxyVersion,omitempty"`
	Connected     bool              `json:"connected"`
	// ConnectedAt is when the current (or last) stream opened.
	ConnectedAt    time.Time  `json:"connectedAt"`
	DisconnectedAt *time.Time `json:"disconnectedAt,omitempty"`
	// State is one of ProxyStates, and Since when it holds (absent when
	// not known): for ProxyDrifted, since when the reports differ.
	State string     `json:"state"`
	Since *time.Time `json:"since,omitempty"`
	// Error is the NACK error when State is ProxyNacked.
	Error string `json:"error,omitempty"`
	// Desired is the snapshot last sent, Acked the last one the proxy
	// acknowledged, Running what it last said it runs: its latest Report,
	// or the version of an ACK that came after it.
	Desired  *ConfigVersion `json:"desired,omitempty"`
	Acked    *ConfigVersion `json:"acked,omitempty"`
	Running  *ConfigVersion `json:"running,omitempty"`
	LastNack *NackInfo      `json:"lastNack,omitempty"`
	// CertExpiry and CertIssuer describe the proxy's workload certificate
	// as it last reported it: expiry, and the hex SHA-256 of the DER of
	// the CA certificate that issued it. TrustRoots are the hex SHA-256 of
	// each trust anchor it verifies peers with. Empty until a report.
	CertExpiry *time.Time `json:"certExpiry,omitempty"`
	CertIssuer string     `json:"certIssuer,omitempty"`
	TrustRoots []string   `json:"trustRoots,omitempty"`
	// DriftRepairs counts the times the control plane re-sent the desired
	// snapshot because the proxy had drifted; LastDriftRepair is the
	// latest.
	DriftRepairs    int        `json:"driftRepairs"`
	LastDriftRepair *time.Time `json:"lastDriftRepair,omitempty"`
}

// ProxyStatus is one proxy in detail (GET /api/v1/proxies/{instance}):
// its ProxyInfo, the desired and the last acknowledged config, and how
// they differ.
type ProxyStatus struct {
	ProxyInfo
	// DesiredConfig and AckedConfig are the snapshots rendered as indented
	// JSON (policies decoded, trust anchors by SHA-256 and subject).
	// Absent when the control plane does not hold that content (the
	// proxy acknowledged it before this control plane started, or never).
	DesiredConfig json.RawMessage `json:"desiredConfig,omitempty"`
	AckedConfig   json.RawMessage `json:"ackedConfig,omitempty"`
	// Diff is a unified-style line diff from AckedConfig to
	// DesiredConfig; empty when they are equal or one is absent.
	Diff string `json:"diff,omitempty"`
	// Note says why a config or the diff is missing.
	Note string `json:"note,omitempty"`
}

// ProxyListResponse lists proxies by namespace, service and instance.
type ProxyListResponse struct {
	Items []ProxyInfo `json:"items"`
}

// ServiceInfo is one mesh service as proxies see it in their snapshots.
type ServiceInfo struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Protocol  string `json:"protocol"`
	// Endpoints is how many addresses callers may dial.
	Endpoints int `json:"endpoints"`
	// Instances counts the proxies registered for the service, Connected
	// those whose stream is up (the others are within their grace period).
	Instances int `json:"instances"`
	Connected int `json:"connected"`
	// VirtualIP is the service's stable virtual IP (mesh DNS answers
	// SERVICE.NAMESPACE.mesh with it), "" when none is assigned.
	VirtualIP string `json:"virtualIP,omitempty"`
}

// ServiceListResponse lists services by namespace and name.
type ServiceListResponse struct {
	Items []ServiceInfo `json:"items"`
}

// CreateAdminTokenRequest asks for an admin token (POST
// /api/v1/admin-tokens). Role is viewer, operator or security-admin;
// Namespaces, when set, limits the token to them; Name defaults to the
// role and a random suffix, TTL to 720h.
type CreateAdminTokenRequest struct {
	Name       string   `json:"name,omitempty"`
	Role       string   `json:"role"`
	Namespaces []string `json:"namespaces,omitempty"`
	TTL        string   `json:"ttl,omitempty"`
}

// AdminTokenInfo describes an admin token, never its secret.
type AdminTokenInfo struct {
	Name       string   `json:"name"`
	Role       string   `json:"role"`
	Namespaces []string `json:"namespaces,omitempty"`
	// CreatedBy is the name of the token that created it ("root" for the
	// bootstrap admin.token).
	CreatedBy string     `json:"createdBy"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	// LastUsed is when this control plane replica last authenticated a
	// call with the token since it started (not stored).
	LastUsed *time.Time `json:"lastUsed,omitempty"`
}

// CreateAdminTokenResponse carries the token's secret, shown once.
type CreateAdminTokenResponse struct {
	Token string         `json:"token"`
	Info  AdminTokenInfo `json:"info"`
}

// AdminTokenListResponse lists admin tokens.
type AdminTokenListResponse struct {
	Items []AdminTokenInfo `json:"items"`
}
