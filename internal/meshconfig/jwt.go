package meshconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/trellismesh/trellis/internal/jwtauthn"
	"github.com/trellismesh/trellis/internal/resource"
)

// jwksClient fetches the JWKS of JWTAuthentications' issuers
// (SetJWKSClient); nil means an HTTPS client with the system roots.
var (
	jwksMu     sync.Mutex
	jwksClient *http.Client
	// authns reuses the authenticator of an unchanged configuration, so
	// that its fetched keys and verified tokens survive new snapshots.
	authns = map[string]*jwtauthn.Authenticator{}
)

// SetJWKSClient sets the client proxies fetch JWKS with (the proxy's
// --jwks-ca-file adds roots for a private identity provider).
func SetJWKSClient(c *http.Client) {
	jwksMu.Lock()
	defer jwksMu.Unlock()
	jwksClient = c
	clear(authns)
}

// compileJWT turns the snapshot's JWTAuthentications into one
// authenticator (nil when none select the workload). An issuer named by
// two of them is refused: which one's settings apply would be a guess.
func compileJWT(raws [][]byte) (*jwtauthn.Authenticator, error) {
	if len(raws) == 0 {
		return nil, nil
	}
	var issuers []jwtauthn.Issuer
	seen := map[string]string{}
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("jwt_authentications[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return nil, fmt.Errorf("jwt_authentications[%d]: %w", i, err)
		}
		spec, err := resource.JWTAuthenticationSpecOf(&o)
		if err != nil {
			return nil, fmt.Errorf("jwt_authentications[%d]: %w", i, err)
		}
		for _, is := range spec.Issuers {
			if prev, dup := seen[is.Issuer]; dup {
				return nil, fmt.Errorf("%s and %s both configure issuer %s for this workload; keep one", prev, o.Ref(), is.Issuer)
			}
			seen[is.Issuer] = o.Ref()
			ji := jwtauthn.Issuer{Issuer: is.Issuer, Audiences: is.Audiences, JWKSURI: is.JWKSURI, JWKS: is.JWKS, Algorithms: is.Algorithms,
				ClockSkew: is.ClockSkew.Duration, FromCookies: is.FromCookies, ForwardClaims: is.ForwardClaims, ForwardOriginalToken: is.ForwardOriginalToken}
			for _, h := range is.FromHeaders {
				ji.FromHeaders = append(ji.FromHeaders, jwtauthn.HeaderSource{Name: h.Name, Prefix: h.Prefix})
			}
			issuers = append(issuers, ji)
		}
	}
	key := string(bytes.Join(raws, []byte{0}))
	jwksMu.Lock()
	defer jwksMu.Unlock()
	if a := authns[key]; a != nil {
		return a, nil
	}
	a, err := jwtauthn.New(issuers, jwtauthn.Options{Client: jwksClient})
	if err != nil {
		return nil, err
	}
	if len(authns) >= 16 {
		clear(authns)
	}
	authns[key] = a
	return a, nil
}

// withClaimHeaders is the strip list plus the headers claims are
// forwarded in: a caller's own values of them never pass.
func withClaimHeaders(list []string, claims []string) []string {
	if len(list) == 0 {
		list = DefaultStripHeaders
	}
	out := append([]string(nil), list...)
	for _, c := range claims {
		out = append(out, strings.ToLower(c))
	}
	return out
}
