package jwtauthn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// issuerServer is a test identity provider serving its JWKS over HTTPS.
type issuerServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey // public
	fetches atomic.Int32
	down    atomic.Bool
}

func newIssuer(t *testing.T) *issuerServer {
	s := &issuerServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *issuerServer) publish(pub ...jose.JSONWebKey) {
	s.mu.Lock()
	s.keys = pub
	s.mu.Unlock()
}

type signingKey struct {
	priv any
	pub  jose.JSONWebKey
	alg  jose.SignatureAlgorithm
}

func newECKey(t *testing.T, kid string) signingKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{priv: k, pub: jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}, alg: jose.ES256}
}

func newRSAKey(t *testing.T, kid string) signingKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{priv: k, pub: jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}, alg: jose.RS256}
}

const iss = "https://id.example.com"

func sign(t *testing.T, k signingKey, c jwt.Claims, extra map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.pub.KeyID}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b := jwt.Signed(sig).Claims(c)
	if extra != nil {
		b = b.Claims(extra)
	}
	tok, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claims(now time.Time, aud ...string) jwt.Claims {
	return jwt.Claims{Issuer: iss, Subject: "alice", Audience: aud, Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute))}
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func TestVerifyAgainstAnHTTPSIssuer(t *testing.T) {
	idp := newIssuer(t)
	k1 := newECKey(t, "k1")
	idp.publish(k1.pub)
	now := time.Now()
	clock := now
	var clockMu sync.Mutex
	a, err := New([]Issuer{{Issuer: iss, Audiences: []string{"shop"}, JWKSURI: idp.URL + "/jwks.json",
		ForwardClaims: map[string]string{"sub": "x-user-id", "groups": "x-user-groups"}}},
		Options{Client: idp.Client(), Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := sign(t, k1, claims(now, "shop"), map[string]any{"groups": []string{"admin", "ops"}})
	r, err := a.Authenticate(ctx, bearer(good))
	if err != nil || r.Principal != iss+"/alice" {
		t.Fatalf("good token: %+v, %v", r, err)
	}
	// Cached: a second use does not fetch, and costs no verification.
	before := idp.fetches.Load()
	for range 100 {
		if _, err := a.Authenticate(ctx, bearer(good)); err != nil {
			t.Fatal(err)
		}
	}
	if idp.fetches.Load() != before {
		t.Errorf("a cached token fetched the JWKS again")
	}

	// Forwarded claims replace what the caller forged; the token goes.
	h := bearer(good)
	h.Set("X-User-Id", "mallory")
	h.Set("X-User-Groups", "admin")
	r, _ = a.Authenticate(ctx, h)
	a.Prepare(h, r)
	if h.Get("X-User-Id") != "alice" || h.Get("X-User-Groups") != "admin,ops" || h.Get("Authorization") != "" {
		t.Errorf("after Prepare: %v", h)
	}
	forged := http.Header{"X-User-Id": {"mallory"}}
	a.Prepare(forged, nil)
	if forged.Get("X-User-Id") != "" {
		t.Errorf("a forged claim header without a token survived: %v", forged)
	}

	for _, tc := range []struct {
		name string
		tok  string
		want error
	}{
		{"expired", sign(t, k1, jwt.Claims{Issuer: iss, Subject: "a", Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(-time.Hour))}, nil), ErrExpired},
		{"not yet valid", sign(t, k1, jwt.Claims{Issuer: iss, Subject: "a", Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(2 * time.Hour)), NotBefore: jwt.NewNumericDate(now.Add(time.Hour))}, nil), ErrNotYetValid},
		{"wrong audience", sign(t, k1, claims(now, "billing"), nil), ErrAudience},
		{"no expiry", sign(t, k1, jwt.Claims{Issuer: iss, Subject: "a", Audience: []string{"shop"}}, nil), ErrNoExpiry},
		{"unknown issuer", sign(t, k1, jwt.Claims{Issuer: "https://evil.example", Subject: "a", Expiry: jwt.NewNumericDate(now.Add(time.Hour))}, nil), ErrUnknownIssuer},
		{"alg none", unsigned(t, `{"alg":"none","typ":"JWT"}`, claims(now, "shop")), ErrAlgorithm},
		{"HS256 with the public key as secret", hmacSigned(t, k1, claims(now, "shop")), ErrAlgorithm},
		{"another key, same kid", sign(t, signingKey{priv: newECKey(t, "k1").priv, pub: k1.pub, alg: jose.ES256}, claims(now, "shop"), nil), ErrSignature},
		{"garbage", "a.b.c", ErrMalformed},
		{"two parts", "a.b", ErrMalformed},
	} {
		_, err := a.Authenticate(ctx, bearer(tc.tok))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if err != nil && !strings.Contains(WWWAuthenticate(err), `error="invalid_token"`) {
			t.Errorf("%s: challenge %q", tc.name, WWWAuthenticate(err))
		}
	}
	if r, err := a.Authenticate(ctx, http.Header{}); r != nil || err != nil {
		t.Errorf("no token: %v, %v; want neither", r, err)
	}

	// Key rotation: a token with a new kid makes the JWKS be fetched again
	// (at most once per MinRefetch).
	k2 := newRSAKey(t, "k2")
	idp.publish(k1.pub, k2.pub)
	if r, err := a.Authenticate(ctx, bearer(sign(t, k2, claims(now, "shop"), nil))); err != nil || r.Principal != iss+"/alice" {
		t.Fatalf("token of a rotated-in key: %v", err)
	}
	n := idp.fetches.Load()
	for range 20 {
		a.Authenticate(ctx, bearer(sign(t, newECKey(t, "k9"), claims(now, "shop"), nil)))
	}
	if got := idp.fetches.Load() - n; got > 1 {
		t.Errorf("20 tokens with an unknown kid fetched the JWKS %d times, want at most 1 (rate limited)", got)
	}

	// The issuer goes down: the cached keys keep working; after the
	// refresh time, failed fetches back off and the last good keys stay.
	idp.down.Store(true)
	clockMu.Lock()
	clock = now.Add(RefreshEvery + time.Second)
	clockMu.Unlock()
	fresh := sign(t, k2, jwt.Claims{Issuer: iss, Subject: "bob", Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(2 * time.Hour))}, nil)
	if _, err := a.Authenticate(ctx, bearer(fresh)); err != nil {
		t.Errorf("with the issuer down, a token of a known key: %v", err)
	}
	n = idp.fetches.Load()
	for range 10 {
		a.Authenticate(ctx, bearer(sign(t, k1, jwt.Claims{Issuer: iss, Subject: "carol", Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(2 * time.Hour))}, nil)))
	}
	if got := idp.fetches.Load() - n; got > 0 {
		t.Errorf("during the backoff, %d more fetches", got)
	}
}

// unsigned builds a token with the given header and an empty signature.
func unsigned(t *testing.T, header string, c jwt.Claims) string {
	body, _ := json.Marshal(c)
	return b64(header) + "." + base64.RawURLEncoding.EncodeToString(body) + "."
}

// hmacSigned signs with HS256, using the public key's DER as the secret:
// the classic confusion attack.
func hmacSigned(t *testing.T, k signingKey, c jwt.Claims) string {
	der, err := x509.MarshalPKIXPublicKey(k.pub.Key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(c)
	in := b64(`{"alg":"HS256","typ":"JWT","kid":"k1"}`) + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, der)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestConfigRefusesUnsafeSettings(t *testing.T) {
	for _, tc := range []struct {
		is   Issuer
		want string
	}{
		{Issuer{Issuer: iss, JWKSURI: "http://id.example.com/jwks"}, "https://"},
		{Issuer{Issuer: iss, JWKSURI: "https://x/jwks", Algorithms: []string{"HS256"}}, "never none or HMAC"},
		{Issuer{Issuer: iss, JWKSURI: "https://x/jwks", Algorithms: []string{"none"}}, "never none or HMAC"},
		{Issuer{Issuer: iss}, "set jwksURI"},
		{Issuer{Issuer: iss, JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`}, "not a public key"},
		{Issuer{JWKSURI: "https://x/jwks"}, "issuer: required"},
	} {
		if _, err := New([]Issuer{tc.is}, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error mentioning %q", tc.is, err, tc.want)
		}
	}
}

func TestInlineJWKSAndCookie(t *testing.T) {
	k := newECKey(t, "inline")
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.pub}})
	a, err := New([]Issuer{{Issuer: iss, JWKS: string(set), FromCookies: []string{"session"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, k, claims(time.Now()), nil)
	h := http.Header{"Cookie": {"theme=dark; session=" + tok}}
	r, err := a.Authenticate(context.Background(), h)
	if err != nil || r == nil || r.Principal != iss+"/alice" {
		t.Fatalf("cookie token: %+v, %v", r, err)
	}
	a.Prepare(h, r)
	if got := h.Get("Cookie"); got != "theme=dark" {
		t.Errorf("after Prepare the Cookie header is %q, want the session cookie removed", got)
	}
}

// BenchmarkAuthenticateCached is the per-request cost with a token a
// client reuses (the target: at most 20 µs at p50).
func BenchmarkAuthenticateCached(b *testing.B) {
	t := &testing.T{}
	k := newECKey(t, "k")
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.pub}})
	a, _ := New([]Issuer{{Issuer: iss, JWKS: string(set)}}, Options{})
	h := bearer(sign(t, k, claims(time.Now()), map[string]any{"groups": []string{"a"}}))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateUncached verifies a new token every time, with
// the issuer's keys cached: ES256 and RS256 (2048-bit).
func BenchmarkAuthenticateUncached(b *testing.B) {
	b.Run("ES256", func(b *testing.B) { benchUncached(b, newECKey(&testing.T{}, "k")) })
	b.Run("RS256", func(b *testing.B) { benchUncached(b, newRSAKey(&testing.T{}, "k")) })
}

func benchUncached(b *testing.B, k signingKey) {
	t := &testing.T{}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.pub}})
	a, _ := New([]Issuer{{Issuer: iss, JWKS: string(set)}}, Options{CacheSize: 1})
	toks := make([]http.Header, 64)
	for i := range toks {
		c := claims(time.Now())
		c.ID = string(rune('a' + i))
		toks[i] = bearer(sign(t, k, c, nil))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.verify(ctx, strings.TrimPrefix(toks[i%len(toks)].Get("Authorization"), "Bearer "), time.Now())
		i++
	}
}

// FuzzAuthenticate feeds arbitrary Authorization headers and cookies:
// never a panic, never a result without a verified signature.
func FuzzAuthenticate(f *testing.F) {
	t := &testing.T{}
	k := newECKey(t, "k")
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.pub}})
	a, _ := New([]Issuer{{Issuer: iss, JWKS: string(set), FromHeaders: []HeaderSource{{Name: "Authorization", Prefix: "Bearer "}}, FromCookies: []string{"s"}}}, Options{})
	good := sign(t, k, claims(time.Now()), nil)
	f.Add("Bearer "+good, "")
	f.Add("Bearer "+unsigned(t, `{"alg":"none"}`, claims(time.Now())), "s=x.y.z")
	f.Add("Bearer a.b.c", "s="+good)
	f.Fuzz(func(t *testing.T, authz, cookie string) {
		h := http.Header{}
		if authz != "" {
			h.Set("Authorization", authz)
		}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		r, err := a.Authenticate(context.Background(), h)
		if r != nil && err == nil {
			// Only the one token this key signed can pass.
			tok, _ := a.find(h.Values)
			if tok != good {
				t.Fatalf("accepted a token not signed by the issuer: %q", tok)
			}
		}
		a.Prepare(h, r)
	})
}
