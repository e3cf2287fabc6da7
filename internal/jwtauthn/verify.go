package jwtauthn

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Errors of Authenticate, for the 401's reason and the metrics.
var (
	ErrMalformed       = errors.New("malformed token")
	ErrUnknownIssuer   = errors.New("unknown issuer")
	ErrAlgorithm       = errors.New("algorithm not allowed")
	ErrUnknownKey      = errors.New("unknown signing key")
	ErrKeysUnavailable = errors.New("the issuer's keys are unavailable")
	ErrSignature       = errors.New("bad signature")
	ErrExpired         = errors.New("token expired")
	ErrNotYetValid     = errors.New("token not yet valid")
	ErrAudience        = errors.New("audience not accepted")
	ErrNoExpiry        = errors.New("token has no expiry (exp)")
)

// AsymmetricAlgorithms are the algorithms an issuer may allow: never
// "none", never HMAC (a verifier holding only public keys must not accept
// a token "signed" with one as a secret).
var AsymmetricAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// DefaultClockSkew is the leeway on exp, nbf and iat.
const DefaultClockSkew = time.Minute

// HeaderSource is a header a token is read from, after Prefix
// ("Authorization", "Bearer ").
type HeaderSource struct {
	Name   string
	Prefix string
}

// Issuer is one trusted issuer.
type Issuer struct {
	Issuer    string
	Audiences []string // at least one must be in the token's aud; empty accepts any
	// JWKSURI (https) or JWKS (inline JSON): the verification keys.
	JWKSURI string
	JWKS    string
	// Algorithms allowed; empty means AsymmetricAlgorithms.
	Algorithms []string
	ClockSkew  time.Duration // zero: DefaultClockSkew
	// Where the token is: headers (default Authorization with "Bearer ")
	// and cookies, tried in order.
	FromHeaders []HeaderSource
	FromCookies []string
	// ForwardClaims sets a header per claim on the request the app gets;
	// ForwardOriginalToken keeps the token's header (else it is removed).
	ForwardClaims        map[string]string
	ForwardOriginalToken bool
}

// Result is a verified token.
type Result struct {
	Issuer string
	// Principal is "ISSUER/SUBJECT".
	Principal string
	Claims    map[string]any
	Expires   time.Time
	// Source names where the token was found, to remove it unless the
	// issuer forwards it.
	source tokenSource
}

type tokenSource struct {
	header, cookie string
}

// Options of New.
type Options struct {
	// Client fetches remote JWKS; nil means an HTTPS client with the
	// system roots and a 5 s timeout.
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CacheSize bounds the verified-token cache (0: 10000).
	CacheSize int
}

// CacheTTL bounds how long a verified token is trusted without checking
// it again (a key removed from the JWKS stops tokens after at most this).
const CacheTTL = 5 * time.Minute

// Authenticator verifies tokens of a set of issuers. Safe for
// concurrent use.
type Authenticator struct {
	issuers []*issuer
	now     func() time.Time

	mu        sync.Mutex
	cache     map[[32]byte]*Result
	cacheExp  map[[32]byte]time.Time
	cacheSize int
}

type issuer struct {
	cfg  Issuer
	algs []jose.SignatureAlgorithm
	keys keySource
}

// New checks the issuers and returns their authenticator.
func New(issuers []Issuer, o Options) (*Authenticator, error) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: fetchTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	a := &Authenticator{now: o.Now, cache: map[[32]byte]*Result{}, cacheExp: map[[32]byte]time.Time{}, cacheSize: o.CacheSize}
	for i, c := range issuers {
		is := &issuer{cfg: c}
		if c.Issuer == "" {
			return nil, fmt.Errorf("issuers[%d].issuer: required", i)
		}
		names := c.Algorithms
		if len(names) == 0 {
			names = AsymmetricAlgorithms
		}
		for _, n := range names {
			if !slices.Contains(AsymmetricAlgorithms, n) {
				return nil, fmt.Errorf("issuers[%d].algorithms: %q is not allowed: use asymmetric algorithms only (%s); never none or HMAC", i, n, strings.Join(AsymmetricAlgorithms, ", "))
			}
			is.algs = append(is.algs, jose.SignatureAlgorithm(n))
		}
		switch {
		case c.JWKS != "" && c.JWKSURI != "":
			return nil, fmt.Errorf("issuers[%d]: set jwksURI or jwks, not both", i)
		case c.JWKS != "":
			set, err := parseJWKS([]byte(c.JWKS))
			if err != nil {
				return nil, fmt.Errorf("issuers[%d].jwks: %w", i, err)
			}
			is.keys = &staticKeys{set: set}
		case c.JWKSURI != "":
			u, err := url.Parse(c.JWKSURI)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return nil, fmt.Errorf("issuers[%d].jwksURI: %q: want an https:// URL", i, c.JWKSURI)
			}
			is.keys = &remoteKeys{uri: c.JWKSURI, client: o.Client}
		default:
			return nil, fmt.Errorf("issuers[%d]: set jwksURI (https) or jwks (inline)", i)
		}
		if len(is.cfg.FromHeaders) == 0 && len(is.cfg.FromCookies) == 0 {
			is.cfg.FromHeaders = []HeaderSource{{Name: "Authorization", Prefix: "Bearer "}}
		}
		if is.cfg.ClockSkew == 0 {
			is.cfg.ClockSkew = DefaultClockSkew
		}
		a.issuers = append(a.issuers, is)
	}
	return a, nil
}

// Authenticate finds and verifies the request's token. It returns nil
// and no error when no configured location holds a token.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header) (*Result, error) {
	return a.AuthenticateValues(ctx, h.Values)
}

// AuthenticateValues is Authenticate over a header lookup (the proxy's
// views of a request).
func (a *Authenticator) AuthenticateValues(ctx context.Context, values func(name string) []string) (*Result, error) {
	token, src := a.find(values)
	if token == "" {
		return nil, nil
	}
	now := a.now()
	sum := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if r, ok := a.cache[sum]; ok && now.Before(a.cacheExp[sum]) {
		a.mu.Unlock()
		out := *r
		out.source = src
		return &out, nil
	}
	a.mu.Unlock()
	r, err := a.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	r.source = src
	a.mu.Lock()
	if len(a.cache) >= a.cacheSize {
		for k, exp := range a.cacheExp { // drop expired ones, else any one
			if !now.Before(exp) || len(a.cache) >= a.cacheSize {
				delete(a.cache, k)
				delete(a.cacheExp, k)
			}
			if len(a.cache) < a.cacheSize && now.Before(exp) {
				break
			}
		}
	}
	a.cache[sum] = r
	exp := now.Add(CacheTTL)
	if r.Expires.Before(exp) {
		exp = r.Expires
	}
	a.cacheExp[sum] = exp
	a.mu.Unlock()
	return r, nil
}

// find returns the first token of any issuer's locations.
func (a *Authenticator) find(values func(string) []string) (string, tokenSource) {
	for _, is := range a.issuers {
		for _, hs := range is.cfg.FromHeaders {
			vs := values(hs.Name)
			if len(vs) == 0 || vs[0] == "" {
				continue
			}
			v := vs[0]
			if t, ok := strings.CutPrefix(v, hs.Prefix); ok || hs.Prefix == "" {
				if t = strings.TrimSpace(t); t != "" {
					return t, tokenSource{header: hs.Name}
				}
			}
		}
		for _, c := range is.cfg.FromCookies {
			for _, ck := range (&http.Request{Header: http.Header{"Cookie": values("Cookie")}}).Cookies() {
				if ck.Name == c && ck.Value != "" {
					return ck.Value, tokenSource{cookie: c}
				}
			}
		}
	}
	return "", tokenSource{}
}

// verify checks the token: its issuer, an allowed algorithm, the
// signature with the issuer's key, then audience and times.
func (a *Authenticator) verify(ctx context.Context, token string, now time.Time) (*Result, error) {
	if strings.Count(token, ".") != 2 {
		return nil, fmt.Errorf("%w: want the three parts of a signed JWT", ErrMalformed)
	}
	// The issuer picks the allowed algorithms: read it unverified first.
	all := make([]jose.SignatureAlgorithm, len(AsymmetricAlgorithms))
	for i, n := range AsymmetricAlgorithms {
		all[i] = jose.SignatureAlgorithm(n)
	}
	tok, err := jwt.ParseSigned(token, all)
	if err != nil {
		if strings.Contains(err.Error(), "unexpected signature algorithm") {
			return nil, fmt.Errorf("%w: %v", ErrAlgorithm, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var peek jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&peek); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var is *issuer
	for _, c := range a.issuers {
		if c.cfg.Issuer == peek.Issuer {
			is = c
			break
		}
	}
	if is == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownIssuer, peek.Issuer)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrMalformed)
	}
	hdr := tok.Headers[0]
	if !slices.Contains(is.algs, jose.SignatureAlgorithm(hdr.Algorithm)) {
		return nil, fmt.Errorf("%w: %s for issuer %s", ErrAlgorithm, hdr.Algorithm, is.cfg.Issuer)
	}
	key, err := is.keys.key(ctx, hdr.KeyID, now)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
		return nil, fmt.Errorf("%w: key %q is for %s, the token says %s", ErrAlgorithm, hdr.KeyID, key.Algorithm, hdr.Algorithm)
	}
	var std jwt.Claims
	claims := map[string]any{}
	if err := tok.Claims(key.Key, &std, &claims); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if std.Expiry == nil {
		return nil, ErrNoExpiry
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: is.cfg.Issuer, AnyAudience: is.cfg.Audiences, Time: now}, is.cfg.ClockSkew)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, fmt.Errorf("%w at %s", ErrExpired, std.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, ErrNotYetValid
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, fmt.Errorf("%w: want one of %s", ErrAudience, strings.Join(is.cfg.Audiences, ", "))
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &Result{Issuer: is.cfg.Issuer, Principal: is.cfg.Issuer + "/" + std.Subject, Claims: claims, Expires: std.Expiry.Time()}, nil
}

// Issuers returns the configured issuers' names.
func (a *Authenticator) Issuers() []string {
	out := make([]string, len(a.issuers))
	for i, is := range a.issuers {
		out[i] = is.cfg.Issuer
	}
	return out
}
