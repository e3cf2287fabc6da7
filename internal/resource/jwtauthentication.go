package resource

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/trellismesh/trellis/internal/names"
)

// KindJWTAuthentication verifies end users' tokens at the workloads it
// selects (docs/end-user-auth.md).
const KindJWTAuthentication = "JWTAuthentication"

// JWTAuthenticationSpec is the spec of a JWTAuthentication: the issuers
// whose tokens the selected workloads (the gateway, or sidecars) verify.
type JWTAuthenticationSpec struct {
	Selector Selector    `json:"selector"`
	Issuers  []JWTIssuer `json:"issuers"`
}

// JWTIssuer is one trusted token issuer.
type JWTIssuer struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKSURI (https) or JWKS (inline JSON) holds the verification keys.
	JWKSURI string `json:"jwksURI,omitempty"`
	JWKS    string `json:"jwks,omitempty"`
	// Algorithms allowed; empty means every asymmetric one (never none,
	// never HMAC).
	Algorithms []string `json:"algorithms,omitempty"`
	// ClockSkew allowed on exp, nbf and iat; default 60s.
	ClockSkew Duration `json:"clockSkew,omitzero"`
	// Where the token is read: headers (default Authorization with the
	// prefix "Bearer ") and cookies.
	FromHeaders []JWTHeader `json:"fromHeaders,omitempty"`
	FromCookies []string    `json:"fromCookies,omitempty"`
	// ForwardClaims sets a header per claim for the app; callers' own
	// values of those headers are always removed.
	ForwardClaims map[string]string `json:"forwardClaims,omitempty"`
	// ForwardOriginalToken keeps the token for the app (default: removed).
	ForwardOriginalToken bool `json:"forwardOriginalToken,omitempty"`
}

// JWTHeader is a header a token is read from, after Prefix.
type JWTHeader struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// asymmetricAlgs are the algorithms an issuer may allow.
var asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// JWTAuthenticationSpecOf decodes, defaults and checks the spec of a
// JWTAuthentication.
func JWTAuthenticationSpecOf(o *Object) (JWTAuthenticationSpec, error) {
	if o.Kind != KindJWTAuthentication {
		return JWTAuthenticationSpec{}, fmt.Errorf("resource.JWTAuthenticationSpecOf: %s is not a %s", o.Ref(), KindJWTAuthentication)
	}
	var errs errorList
	spec := jwtAuthenticationSpec(&errs, o.Spec)
	if err := errs.err(o.Source, o.Ref()); err != nil {
		return JWTAuthenticationSpec{}, err
	}
	return spec, nil
}

func jwtAuthenticationSpec(errs *errorList, raw json.RawMessage) JWTAuthenticationSpec {
	var s JWTAuthenticationSpec
	decodeSpec(errs, raw, &s)
	if sv := s.Selector.Service; sv != "" && !names.IsDNSLabel(sv) {
		errs.add("spec.selector.service", "%s %s", quote(sv), names.DNSLabelRule)
	}
	checkLabels(errs, "spec.selector.matchLabels", s.Selector.MatchLabels)
	if len(s.Issuers) == 0 && !errs.failedAt("spec.issuers") {
		errs.add("spec.issuers", "required: list the token issuers, as in issuers: [{issuer: https://id.example.com, jwksURI: https://id.example.com/.well-known/jwks.json}]")
	}
	seen := map[string]bool{}
	for i, is := range s.Issuers {
		f := fmt.Sprintf("spec.issuers[%d]", i)
		switch {
		case is.Issuer == "":
			errs.add(f+".issuer", "required: the token's iss, such as https://id.example.com")
		case hasSpaceOrControl(is.Issuer):
			errs.add(f+".issuer", "%s", noSpace(is.Issuer))
		case seen[is.Issuer]:
			errs.add(f+".issuer", "%s is listed twice; give each issuer once", quote(is.Issuer))
		}
		seen[is.Issuer] = true
		switch {
		case is.JWKSURI != "" && is.JWKS != "":
			errs.add(f+".jwks", "set jwksURI or jwks, not both")
		case is.JWKSURI != "":
			if u, err := url.Parse(is.JWKSURI); err != nil || u.Scheme != "https" || u.Host == "" {
				errs.add(f+".jwksURI", "%s: want an https:// URL (keys are never fetched in plaintext)", quote(is.JWKSURI))
			}
		case is.JWKS != "":
			if msg := checkInlineJWKS(is.JWKS); msg != "" {
				errs.add(f+".jwks", "%s", msg)
			}
		default:
			errs.add(f+".jwksURI", "required: set jwksURI (https) or jwks (the keys as inline JSON)")
		}
		for j, a := range is.Algorithms {
			ok := false
			for _, x := range asymmetricAlgs {
				ok = ok || a == x
			}
			if !ok {
				errs.add(fmt.Sprintf("%s.algorithms[%d]", f, j), "%s is not allowed: use asymmetric algorithms only (%s); never none or HMAC", quote(a), strings.Join(asymmetricAlgs, ", "))
			}
		}
		if d := is.ClockSkew.Duration; d < 0 || d > 10*60e9 {
			errs.add(f+".clockSkew", "must be from 0 to 10m, got %s", formatDuration(d))
		}
		for j, h := range is.FromHeaders {
			if !names.IsHTTPToken(h.Name) {
				errs.add(fmt.Sprintf("%s.fromHeaders[%d].name", f, j), "%s is not a header name", quote(h.Name))
			}
		}
		for j, c := range is.FromCookies {
			if !names.IsHTTPToken(c) {
				errs.add(fmt.Sprintf("%s.fromCookies[%d]", f, j), "%s is not a cookie name", quote(c))
			}
		}
		for _, claim := range sortedKeys(is.ForwardClaims) {
			h := is.ForwardClaims[claim]
			if !names.IsHTTPToken(h) {
				errs.add(f+".forwardClaims["+claim+"]", "%s is not a header name", quote(h))
			}
		}
	}
	return s
}

// checkInlineJWKS accepts a JSON object with a "keys" list of public
// keys; it leaves the cryptographic checks to the proxies' JOSE library.
func checkInlineJWKS(s string) string {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return "not a JWKS (a JSON object with \"keys\"): " + err.Error()
	}
	if len(set.Keys) == 0 {
		return "the JWKS has no keys"
	}
	for i, k := range set.Keys {
		if k["kty"] == "oct" {
			return fmt.Sprintf("key %d is a symmetric (oct) key: only public keys verify tokens here", i)
		}
		if _, private := k["d"]; private {
			return fmt.Sprintf("key %d holds a private key (\"d\"): publish public keys only", i)
		}
	}
	return ""
}
