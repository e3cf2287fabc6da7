package dataplane_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/trellismesh/trellis/internal/jwtauthn"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/ratelimit"
	"github.com/trellismesh/trellis/internal/testutil"
)

// The authenticate and rate-limit steps on the HTTP/2 relay (a service of
// protocol http2, h2c from the client, HTTP/2 between the proxies and to
// the app), the twin of the HTTP/1.1 paths' end-to-end tests in
// internal/cli: hundreds of requests, each answered as it should be.
func TestEndUserAndRateLimitOverTheHTTP2Relay(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s authz=%q", r.Header.Get("X-User-Id"), r.Header.Get("Authorization"))
	})
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolHTTP2, appH2C: true, app: app})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k", Algorithm: "ES256", Use: "sig"}}})
	const iss = "https://id.example.com"
	authn, err := jwtauthn.New([]jwtauthn.Issuer{{Issuer: iss, JWKS: string(set), ForwardClaims: map[string]string{"sub": "x-user-id"}}}, jwtauthn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap := *m.snap.get()
	snap.Authn = authn
	snap.StripHeaders = append(append([]string(nil), meshconfig.DefaultStripHeaders...), "x-user-id")
	m.snap.set(&snap)

	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k"}}, nil)
	good, _ := jwt.Signed(sig).Claims(jwt.Claims{Issuer: iss, Subject: "alice", Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	expired, _ := jwt.Signed(sig).Claims(jwt.Claims{Issuer: iss, Subject: "bob", Expiry: jwt.NewNumericDate(time.Now().Add(-time.Hour))}).Serialize()

	c := testutil.H2CClient(t)
	send := func(token string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, m.url("/orders"), nil)
		req.Header.Set("X-User-Id", "mallory")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return testutil.Do(t, c, req)
	}
	for i := range 200 {
		resp, body := send(good)
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || body != `user=alice authz=""` {
			t.Fatalf("request %d, valid token: %s %d %q", i, resp.Proto, resp.StatusCode, body)
		}
		if resp, body := send(""); resp.StatusCode != 200 || body != `user= authz=""` {
			t.Fatalf("request %d, no token and a forged claim header: %d %q", i, resp.StatusCode, body)
		}
		if resp, _ := send(expired); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") == "" {
			t.Fatalf("request %d, expired token: %d, challenge %q", i, resp.StatusCode, resp.Header.Get("Www-Authenticate"))
		}
	}

	// A limit of 5 a second, per caller: past the burst, 429 with
	// Retry-After.
	// A new snapshot: a published one is never changed.
	limited := snap
	limited.RateLimits = []meshconfig.RateLimit{{Ref: "shop/rl", PerCall: true, Limiter: ratelimit.New(5, 5), RPS: 5}}
	m.snap.set(&limited)
	codes := map[int]int{}
	began := time.Now()
	for range 100 {
		resp, _ := send(good)
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	most := 5 + int(time.Since(began).Seconds()*5) + 1
	if codes[200] < 5 || codes[200] > most || codes[200]+codes[429] != 100 {
		t.Fatalf("100 requests at 5/s in %s: %v, want 5 to %d passed and the rest 429", time.Since(began), codes, most)
	}
}
