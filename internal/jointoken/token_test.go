package jointoken_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
)

var tokenErrs = []error{jointoken.ErrInvalid, jointoken.ErrExpired}

var b64 = base64.RawURLEncoding

// newAuthority returns an authority for td with a fresh key and a fake clock
// at t0, and the key so tests can sign tokens of their own.
func newAuthority(t *testing.T) (*jointoken.Authority, *ecdsa.PrivateKey, *clock.Fake) {
	t.Helper()
	key := mustECDSA(t, elliptic.P256())
	clk := clock.NewFake(t0)
	return jointoken.New(key, td, jointoken.Options{Now: clk.Now}), key, clk
}

func issue(t *testing.T, a *jointoken.Authority) (string, jointoken.Claims) {
	t.Helper()
	tok, claims, err := a.Issue("web", "shop", "web", 24*time.Hour)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok, claims
}

// segments splits a compact JWS and decodes its header and payload.
func segments(t *testing.T, tok string) (header, payload map[string]any, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		raw, err := b64.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	return header, payload, parts[2]
}

func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(b)
}

// validClaims are the claims a token from a TokenAuthority for td carries,
// as a map tests can edit and sign with signClaims.
func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "trellis-control",
		"aud": []string{"trellis-identity"},
		"sub": "spiffe://example.org/ns/shop/sa/web",
		"exp": t0.Add(time.Hour).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
		"iat": t0.Unix(),
		"jti": "0123456789abcdef0123456789abcdef",
		"svc": "web",
		"ns":  "shop",
		"sa":  "web",
	}
}

func signClaims(t *testing.T, key *ecdsa.PrivateKey, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenRoundTrip(t *testing.T) {
	a, _, clk := newAuthority(t)
	tok, issued, err := a.Issue("web-frontend", "shop", "web", 24*time.Hour)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if got, want := issued.SPIFFEID.String(), "spiffe://example.org/ns/shop/sa/web"; got != want {
		t.Errorf("issued SPIFFEID = %q, want %q", got, want)
	}
	if got, want := issued.IssuedAt, t0; !got.Equal(want) {
		t.Errorf("issued IssuedAt = %v, want %v", got, want)
	}
	if got, want := issued.ExpiresAt, t0.Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("issued ExpiresAt = %v, want %v", got, want)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(issued.ID) {
		t.Errorf("issued ID = %q, want 32 hex digits", issued.ID)
	}

	clk.Advance(time.Hour)
	got, err := a.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"ID", got.ID, issued.ID},
		{"SPIFFEID", got.SPIFFEID, issued.SPIFFEID},
		{"Service", got.Service, "web-frontend"},
		{"Namespace", got.Namespace, "shop"},
		{"ServiceAccount", got.ServiceAccount, "web"},
		{"IssuedAt", got.IssuedAt.Unix(), t0.Unix()},
		{"ExpiresAt", got.ExpiresAt.Unix(), t0.Add(24 * time.Hour).Unix()},
	} {
		if f.got != f.want {
			t.Errorf("verified %s = %v, want %v", f.name, f.got, f.want)
		}
	}

	header, payload, _ := segments(t, tok)
	for k, want := range map[string]any{"alg": "ES256", "typ": "JWT"} {
		if header[k] != want {
			t.Errorf("header %s = %v, want %v", k, header[k], want)
		}
	}
	if kid, _ := header["kid"].(string); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(kid) {
		t.Errorf("header kid = %q, want 16 hex digits", kid)
	}
	for k, want := range map[string]any{
		"iss": "trellis-control", "sub": "spiffe://example.org/ns/shop/sa/web",
		"svc": "web-frontend", "ns": "shop", "sa": "web", "jti": issued.ID,
		"iat": float64(t0.Unix()), "nbf": float64(t0.Add(-identity.MaxBackdate).Unix()),
		"exp": float64(t0.Add(24 * time.Hour).Unix()),
	} {
		if payload[k] != want {
			t.Errorf("payload %s = %v, want %v", k, payload[k], want)
		}
	}
	if aud, _ := json.Marshal(payload["aud"]); string(aud) != `["trellis-identity"]` {
		t.Errorf("payload aud = %s, want [\"trellis-identity\"]", aud)
	}
}

func TestTokenIssueTruncatesToSeconds(t *testing.T) {
	key := mustECDSA(t, elliptic.P256())
	clk := clock.NewFake(t0.Add(700 * time.Millisecond))
	a := jointoken.New(key, td, jointoken.Options{Now: clk.Now})
	tok, issued, err := a.Issue("web", "shop", "web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !issued.IssuedAt.Equal(t0) || !issued.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("issued window = [%v, %v], want [%v, %v]", issued.IssuedAt, issued.ExpiresAt, t0, t0.Add(time.Hour))
	}
	if _, err := a.Verify(tok); err != nil {
		t.Errorf("Verify at the issuing instant: %v", err)
	}
}

func TestTokenIDsUnique(t *testing.T) {
	a, _, _ := newAuthority(t)
	seen := map[string]bool{}
	for range 100 {
		_, c, err := a.Issue("web", "shop", "web", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if seen[c.ID] {
			t.Fatalf("token ID %s issued twice", c.ID)
		}
		seen[c.ID] = true
	}
}

func TestTokenValidityWindow(t *testing.T) {
	a, _, clk := newAuthority(t)
	tok, _ := issue(t, a) // valid [t0-1m nbf, t0 iat, t0+24h exp)
	for _, tc := range []struct {
		name string
		at   time.Time
		err  error
	}{
		{"at issue", t0, nil},
		{"one second before expiry", t0.Add(24*time.Hour - time.Second), nil},
		{"at expiry", t0.Add(24 * time.Hour), jointoken.ErrExpired},
		{"a year later", t0.Add(365 * 24 * time.Hour), jointoken.ErrExpired},
		// Verifying replicas' clocks may lag the issuer's by up to
		// MaxBackdate, the skew the token's nbf is backdated for.
		{"verifier 30s behind", t0.Add(-30 * time.Second), nil},
		{"verifier MaxBackdate behind", t0.Add(-identity.MaxBackdate), nil},
		{"verifier further behind", t0.Add(-identity.MaxBackdate - time.Second), jointoken.ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Set(tc.at)
			_, err := a.Verify(tok)
			if tc.err == nil {
				if err != nil {
					t.Errorf("Verify at %v: %v, want nil", tc.at, err)
				}
				return
			}
			checkSentinel(t, err, tc.err, tokenErrs...)
		})
	}
}

func TestTokenRejects(t *testing.T) {
	a, key, _ := newAuthority(t)
	tok, _ := issue(t, a)
	header, payload, sig := segments(t, tok)
	parts := strings.Split(tok, ".")

	other, _, _ := newAuthority(t)
	otherTok, _ := issue(t, other)

	// A token whose payload names another service account, keeping the
	// original signature.
	tampered := maps.Clone(payload)
	tampered["sa"], tampered["sub"] = "admin", "spiffe://example.org/ns/shop/sa/admin"
	tamperedTok := parts[0] + "." + encodeSegment(t, tampered) + "." + sig

	// alg "none", by hand, with and without a signature segment.
	noneHeader := encodeSegment(t, map[string]any{"alg": "none", "typ": "JWT"})
	noneTok := noneHeader + "." + parts[1] + "."
	noneTokSig := noneHeader + "." + parts[1] + "." + sig
	noneLib, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(payload)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	// HS256 keyed with the authority's public key in each form a confused
	// verifier might use as an HMAC secret.
	pkix, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecdhPub, err := key.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	hsHeader := map[string]any{"alg": "HS256", "typ": "JWT", "kid": header["kid"]}
	hs256 := func(secret []byte) string {
		signing := encodeSegment(t, hsHeader) + "." + parts[1]
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(signing))
		return signing + "." + b64.EncodeToString(m.Sum(nil))
	}

	// ES384 with a P-384 key, and RS256: real signatures, wrong algorithms.
	es384, err := jwt.NewWithClaims(jwt.SigningMethodES384, jwt.MapClaims(payload)).SignedString(mustECDSA(t, elliptic.P384()))
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(payload)).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}

	// Tokens validly signed by the authority's key, with bad claims.
	edit := func(f func(c jwt.MapClaims)) string {
		c := validClaims()
		f(c)
		return signClaims(t, key, c)
	}

	flippedSig := []byte(sig)
	flippedSig[len(flippedSig)/2] ^= 0x01 // stays base64url: flips between letters/digits
	if flippedSig[len(flippedSig)/2] == '.' {
		t.Fatal("flipped signature byte became a separator")
	}

	for _, tc := range []struct {
		name string
		tok  string
		err  error
	}{
		{"empty", "", jointoken.ErrInvalid},
		{"garbage", "not.a.token", jointoken.ErrInvalid},
		{"two segments", parts[0] + "." + parts[1], jointoken.ErrInvalid},
		{"four segments", tok + "." + sig, jointoken.ErrInvalid},
		{"signed by another authority", otherTok, jointoken.ErrInvalid},
		{"tampered payload", tamperedTok, jointoken.ErrInvalid},
		{"tampered signature", parts[0] + "." + parts[1] + "." + string(flippedSig), jointoken.ErrInvalid},
		{"signature dropped", parts[0] + "." + parts[1] + ".", jointoken.ErrInvalid},
		{"alg none", noneTok, jointoken.ErrInvalid},
		{"alg none keeping the signature", noneTokSig, jointoken.ErrInvalid},
		{"alg none via the library", noneLib, jointoken.ErrInvalid},
		{"HS256 keyed with the PKIX public key", hs256(pkix), jointoken.ErrInvalid},
		{"HS256 keyed with the PEM public key", hs256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})), jointoken.ErrInvalid},
		{"HS256 keyed with the raw point", hs256(ecdhPub.Bytes()), jointoken.ErrInvalid},
		{"ES384", es384, jointoken.ErrInvalid},
		{"RS256", rs256, jointoken.ErrInvalid},
		{"wrong issuer", edit(func(c jwt.MapClaims) { c["iss"] = "someone-else" }), jointoken.ErrInvalid},
		{"no issuer", edit(func(c jwt.MapClaims) { delete(c, "iss") }), jointoken.ErrInvalid},
		{"wrong audience", edit(func(c jwt.MapClaims) { c["aud"] = []string{"trellis-admin"} }), jointoken.ErrInvalid},
		{"no audience", edit(func(c jwt.MapClaims) { delete(c, "aud") }), jointoken.ErrInvalid},
		{"no expiry", edit(func(c jwt.MapClaims) { delete(c, "exp") }), jointoken.ErrInvalid},
		{"no issued-at", edit(func(c jwt.MapClaims) { delete(c, "iat") }), jointoken.ErrInvalid},
		{"no id", edit(func(c jwt.MapClaims) { delete(c, "jti") }), jointoken.ErrInvalid},
		{"no service", edit(func(c jwt.MapClaims) { delete(c, "svc") }), jointoken.ErrInvalid},
		{"subject in another trust domain", edit(func(c jwt.MapClaims) { c["sub"] = "spiffe://other.example/ns/shop/sa/web" }), jointoken.ErrInvalid},
		{"subject not a workload id", edit(func(c jwt.MapClaims) { c["sub"] = "spiffe://example.org/web" }), jointoken.ErrInvalid},
		{"subject not a spiffe id", edit(func(c jwt.MapClaims) { c["sub"] = "web" }), jointoken.ErrInvalid},
		{"no subject", edit(func(c jwt.MapClaims) { delete(c, "sub") }), jointoken.ErrInvalid},
		{"namespace claim disagrees with subject", edit(func(c jwt.MapClaims) { c["ns"] = "bank" }), jointoken.ErrInvalid},
		{"service account claim disagrees with subject", edit(func(c jwt.MapClaims) { c["sa"] = "admin" }), jointoken.ErrInvalid},
		{"exp not a number", edit(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), jointoken.ErrInvalid},
		{"expired", edit(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Second).Unix() }), jointoken.ErrExpired},
		{"not yet valid", edit(func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Hour).Unix() }), jointoken.ErrExpired},
		{"issued in the future beyond MaxBackdate", edit(func(c jwt.MapClaims) { c["iat"] = t0.Add(identity.MaxBackdate + time.Second).Unix() }), jointoken.ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Verify(tc.tok)
			if err == nil {
				t.Fatalf("Verify = %+v, nil error; want %v", got, tc.err)
			}
			checkSentinel(t, err, tc.err, tokenErrs...)
			if !got.SPIFFEID.IsZero() || got.ID != "" {
				t.Errorf("Verify returned claims %+v alongside an error", got)
			}
		})
	}

	// The edited-claims cases are only meaningful if the unedited claims
	// verify; so do those whose iat lies within the allowed skew.
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"unedited validClaims", edit(func(jwt.MapClaims) {})},
		{"iat MaxBackdate in the future", edit(func(c jwt.MapClaims) { c["iat"] = t0.Add(identity.MaxBackdate).Unix() })},
		{"no nbf", edit(func(c jwt.MapClaims) { delete(c, "nbf") })},
	} {
		if _, err := a.Verify(tc.tok); err != nil {
			t.Errorf("Verify of %s: %v, want nil", tc.name, err)
		}
	}
}

func TestTokenWrongTrustDomain(t *testing.T) {
	key := mustECDSA(t, elliptic.P256())
	opts := jointoken.Options{Now: clock.NewFake(t0).Now}
	issuer := jointoken.New(key, td, opts)
	verifier := jointoken.New(key, otherTD, opts) // same key, other trust domain
	tok, _ := issue(t, issuer)
	if _, err := issuer.Verify(tok); err != nil {
		t.Fatalf("Verify by the issuer: %v", err)
	}
	_, err := verifier.Verify(tok)
	checkSentinel(t, err, jointoken.ErrInvalid, tokenErrs...)
}

func TestTokenIssueRejects(t *testing.T) {
	a, _, _ := newAuthority(t)
	for _, tc := range []struct {
		name    string
		ns, sa  string
		ttl     time.Duration
		wantMsg string
	}{
		{"zero ttl", "shop", "web", 0, "out of range"},
		{"negative ttl", "shop", "web", -time.Hour, "out of range"},
		{"ttl over the maximum", "shop", "web", jointoken.MaxTTL + time.Second, "out of range"},
		{"empty namespace", "", "web", time.Hour, "workload id"},
		{"empty service account", "shop", "", time.Hour, "workload id"},
		{"slash in namespace", "shop/x", "web", time.Hour, "workload id"},
		{"dot-dot service account", "shop", "..", time.Hour, "workload id"},
		{"space in service account", "shop", "w eb", time.Hour, "workload id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, c, err := a.Issue("web", tc.ns, tc.sa, tc.ttl)
			if err == nil {
				t.Fatalf("Issue(ns %q, sa %q, ttl %v) = %q, nil error; want error", tc.ns, tc.sa, tc.ttl, tok)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
			if tok != "" || c.ID != "" {
				t.Errorf("Issue returned token %q, claims %+v alongside an error", tok, c)
			}
		})
	}
	for _, ttl := range []time.Duration{time.Second, jointoken.MaxTTL} {
		if _, _, err := a.Issue("web", "shop", "web", ttl); err != nil {
			t.Errorf("Issue with ttl %v: %v, want nil", ttl, err)
		}
	}
}

func TestLoadOrCreateTokenAuthority(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(t0)
	opts := jointoken.Options{Now: clk.Now}
	a1, err := jointoken.LoadOrCreate(dir, td, opts)
	if err != nil {
		t.Fatalf("first LoadOrCreateTokenAuthority: %v", err)
	}
	keyPath := filepath.Join(dir, "ca", "token-signing.key")
	if got := fileMode(t, keyPath); got != 0o600 {
		t.Errorf("token key mode = %04o, want 0600", got)
	}
	if got := fileMode(t, filepath.Join(dir, "ca")); got != 0o700 {
		t.Errorf("ca dir mode = %04o, want 0700", got)
	}
	key, err := identity.ReadKeyFile(keyPath)
	if err != nil {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("token key = %T, want ECDSA P-256", key)
	}
	before, _ := os.ReadFile(keyPath)

	tok, issued := issue(t, a1)
	h1, _, _ := segments(t, tok)

	clk.Advance(time.Hour)
	a2, err := jointoken.LoadOrCreate(dir, td, opts)
	if err != nil {
		t.Fatalf("second LoadOrCreateTokenAuthority: %v", err)
	}
	if after, _ := os.ReadFile(keyPath); string(after) != string(before) {
		t.Errorf("second start rewrote the token key")
	}
	got, err := a2.Verify(tok)
	if err != nil {
		t.Fatalf("Verify after reload: %v", err)
	}
	if got.ID != issued.ID || got.SPIFFEID != issued.SPIFFEID {
		t.Errorf("Verify after reload = %+v, want %+v", got, issued)
	}
	tok2, _ := issue(t, a2)
	if h2, _, _ := segments(t, tok2); h2["kid"] != h1["kid"] {
		t.Errorf("kid after reload = %v, want %v", h2["kid"], h1["kid"])
	}
	if _, err := a1.Verify(tok2); err != nil {
		t.Errorf("token from the reloaded authority does not verify with the first: %v", err)
	}

	// A different data dir has a different key.
	a3, err := jointoken.LoadOrCreate(t.TempDir(), td, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a3.Verify(tok)
	checkSentinel(t, err, jointoken.ErrInvalid, tokenErrs...)
}

func TestLoadOrCreateTokenAuthorityErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     func(t *testing.T) []byte
		mode    os.FileMode
		wantMsg string
	}{
		{
			name: "readable by others",
			key: func(t *testing.T) []byte {
				b, err := identity.EncodeKeyPEM(mustECDSA(t, elliptic.P256()))
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			mode: 0o644, wantMsg: "chmod 600",
		},
		{
			name: "P-384 key",
			key: func(t *testing.T) []byte {
				b, err := identity.EncodeKeyPEM(mustECDSA(t, elliptic.P384()))
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			mode: 0o600, wantMsg: "want an ECDSA P-256 key",
		},
		{
			name: "RSA key",
			key: func(t *testing.T) []byte {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					t.Fatal(err)
				}
				b, err := identity.EncodeKeyPEM(k)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			mode: 0o600, wantMsg: "want an ECDSA P-256 key",
		},
		{
			name:    "garbage",
			key:     func(*testing.T) []byte { return []byte("garbage") },
			mode:    0o600,
			wantMsg: "no PEM block",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "ca"), 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "ca", "token-signing.key")
			writeFile(t, path, tc.key(t), tc.mode)
			a, err := jointoken.LoadOrCreate(dir, td, jointoken.Options{})
			if err == nil {
				t.Fatalf("LoadOrCreateTokenAuthority = %v, nil error; want error containing %q", a, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
		})
	}
}
