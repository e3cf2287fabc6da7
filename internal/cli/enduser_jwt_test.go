package cli_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// End users through real proxies: frontend's proxy verifies tokens from
// an issuer serving its JWKS over HTTPS, a policy requires a claim, and
// every answer is right over hundreds of requests: an admin's token 200
// (the app sees the verified claims, never the caller's forged ones, and
// no token), a user's 403, none 403, a bad token 401 with a challenge;
// on the HTTP/1.1 fast path and on net/http (a percent-encoded path).
func TestEndUserJWTThroughProxies(t *testing.T) {
	m := startMesh(t)
	idp := startIssuer(t)
	key, caFile, iss := idp.key, idp.caFile, idp.issuer
	m.mustRun(t, fmt.Sprintf(`apiVersion: trellis.dev/v1alpha1
kind: JWTAuthentication
metadata: {name: shop-users, namespace: shop}
spec:
  selector: {service: frontend}
  issuers:
  - issuer: %s
    audiences: [shop]
    jwksURI: %s/.well-known/jwks.json
    forwardClaims: {sub: x-user-id, groups: x-user-groups}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admins-only, namespace: shop}
spec:
  selector: {service: frontend}
  rules:
  - from: [{requestPrincipals: ["%s/*"]}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
`, iss, idp.url, iss), "apply", "-f", "-")

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s groups=%s authz=%q", r.Header.Get("X-User-Id"), r.Header.Get("X-User-Groups"), r.Header.Get("Authorization"))
	}))
	t.Cleanup(app.Close)
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", AppAddr: strings.TrimPrefix(app.URL, "http://"), JWKSCAFile: caFile})
	edge := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "edge", Upstreams: []proxy.Upstream{{Service: "frontend", Namespace: "shop", Listen: "127.0.0.1:0"}}})

	sign := func(c jwt.Claims, extra map[string]any, alg jose.SignatureAlgorithm) string {
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(sig).Claims(c).Claims(extra).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	valid := func(sub string) jwt.Claims {
		return jwt.Claims{Issuer: iss, Subject: sub, Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	}
	admin := sign(valid("alice"), map[string]any{"groups": []string{"ops", "admin"}}, jose.ES256)
	user := sign(valid("bob"), map[string]any{"groups": []string{"ops"}}, jose.ES256)
	expired := sign(jwt.Claims{Issuer: iss, Subject: "carol", Audience: []string{"shop"}, Expiry: jwt.NewNumericDate(now.Add(-time.Hour))}, map[string]any{"groups": []string{"admin"}}, jose.ES256)
	wrongAud := sign(jwt.Claims{Issuer: iss, Subject: "dave", Audience: []string{"billing"}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}, map[string]any{"groups": []string{"admin"}}, jose.ES256)
	parts := strings.Split(admin, ".")
	none := `eyJhbGciOiJub25lIn0.` + parts[1] + `.`

	client := &http.Client{Timeout: 5 * time.Second}
	call := func(path, token string, extra map[string]string) (int, string, string) {
		req, _ := http.NewRequest("GET", "http://"+edge.UpstreamAddr(0)+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), resp.Header.Get("Www-Authenticate")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _, _ := call("/orders", admin, nil); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			code, body, _ := call("/orders", admin, nil)
			t.Fatalf("an admin's request never passed within 15s: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 100 {
		for _, path := range []string{"/orders", "/%6Frders"} { // fast path; net/http
			forged := map[string]string{"X-User-Id": "mallory", "X-User-Groups": "admin"}
			if code, body, _ := call(path, admin, forged); code != 200 || body != `user=alice groups=ops,admin authz=""` {
				t.Fatalf("request %d %s: admin: %d %q", i, path, code, body)
			}
			if code, body, _ := call(path, user, forged); code != http.StatusForbidden {
				t.Fatalf("request %d %s: user without the admin claim: %d %q", i, path, code, body)
			}
			if code, body, _ := call(path, "", forged); code != http.StatusForbidden {
				t.Fatalf("request %d %s: no token, forged claim headers: %d %q", i, path, code, body)
			}
			for name, tok := range map[string]string{"expired": expired, "wrong audience": wrongAud, "alg none": none, "garbage": "x.y.z"} {
				code, body, challenge := call(path, tok, nil)
				if code != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) || !strings.Contains(body, "invalid token") {
					t.Fatalf("request %d %s: %s token: %d %q, challenge %q", i, path, name, code, body, challenge)
				}
			}
		}
	}
}
