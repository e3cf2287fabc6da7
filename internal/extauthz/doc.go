// Package extauthz is the proxy's client of external authorization
// services speaking Envoy's ext_authz gRPC API
// (envoy.service.auth.v3.Authorization/Check, with the types of Envoy's
// Go API module), so that existing servers such as OPA's Envoy plugin
// work unchanged. AuthorizationPolicies with action CUSTOM name a Mesh
// extension provider; the admission chain asks it through a Pool, which
// keeps one gRPC connection per provider address across configuration
// versions. Answers are never cached.
//
// The data path (internal/dataplane/admission) imports it; it must not
// depend on the data path, the proxy, the control plane or the store
// (internal/deptest keeps this).
package extauthz
