package resource

import (
	"strings"
	"testing"
)

func jwtObject(spec string) Object {
	objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: JWTAuthentication\nmetadata: {name: users, namespace: shop}\nspec: "+spec+"\n"), "jwt.yaml")
	if err != nil {
		panic(err)
	}
	return objs[0]
}

func TestJWTAuthenticationValidation(t *testing.T) {
	ok := jwtObject(`{selector: {service: frontend}, issuers: [{issuer: "https://id.example.com", audiences: [shop], jwksURI: "https://id.example.com/jwks.json", fromHeaders: [{name: Authorization, prefix: "Bearer "}], forwardClaims: {sub: x-user-id}}]}`)
	if err := Validate(&ok); err != nil {
		t.Fatalf("valid JWTAuthentication refused: %v", err)
	}
	for _, tc := range []struct{ spec, field, msg string }{
		{`{issuers: []}`, "spec.issuers", "required"},
		{`{issuers: [{jwksURI: "https://x/j"}]}`, "spec.issuers[0].issuer", "required"},
		{`{issuers: [{issuer: a, jwksURI: "http://x/j"}]}`, "spec.issuers[0].jwksURI", "https://"},
		{`{issuers: [{issuer: a}]}`, "spec.issuers[0].jwksURI", "required"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j", jwks: "{}"}]}`, "spec.issuers[0].jwks", "not both"},
		{`{issuers: [{issuer: a, jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}]}`, "spec.issuers[0].jwks", "symmetric"},
		{`{issuers: [{issuer: a, jwks: '{"keys":[{"kty":"EC","d":"x"}]}'}]}`, "spec.issuers[0].jwks", "private key"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j", algorithms: [HS256]}]}`, "spec.issuers[0].algorithms[0]", "never none or HMAC"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j", algorithms: [none]}]}`, "spec.issuers[0].algorithms[0]", "never none or HMAC"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j", forwardClaims: {sub: "x user"}}]}`, "spec.issuers[0].forwardClaims[sub]", "not a header name"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j"}, {issuer: a, jwksURI: "https://y/j"}]}`, "spec.issuers[1].issuer", "twice"},
		{`{issuers: [{issuer: a, jwksURI: "https://x/j", clockSkew: 1h}]}`, "spec.issuers[0].clockSkew", "10m"},
	} {
		o := jwtObject(tc.spec)
		err := Validate(&o)
		if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("spec %s: got %v, want an error at %s mentioning %q", tc.spec, err, tc.field, tc.msg)
		}
	}
}
