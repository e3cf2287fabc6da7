// Package jwtauthn verifies end users' JSON Web Tokens for a workload
// (docs/end-user-auth.md): the token is read from a header or a cookie,
// its issuer picks the keys (a JWKS fetched over HTTPS, cached, refreshed
// with backoff and refetched, rate limited, for an unknown key id; or an
// inline JWKS), and go-jose checks the signature with the issuer's
// allowed asymmetric algorithms only (never "none", never HMAC), then
// the issuer, audience and times with a clock skew. A verified token is
// cached until it expires (at most CacheTTL), so a client reusing its
// token costs a hash and a map lookup.
//
// The request principal is "ISSUER/SUBJECT", as in Istio's
// requestPrincipals. The claims are bound to the workload that verified
// them: they are never taken from headers a caller sent.
package jwtauthn
