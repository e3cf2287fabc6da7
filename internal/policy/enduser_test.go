package policy

import (
	"testing"
)

// requestPrincipals and claim conditions: a request without a token
// matches no requestPrincipals entry (not even "*") and no claim
// condition; a list claim matches when any element does; a DENY on a
// claim holds for any matching element; headers named like claims are
// not claims.
func TestEndUserPrincipalsAndClaims(t *testing.T) {
	pols := mustPolicies(t,
		`shop/admins-only: {selector: {service: catalog}, rules: [{from: [{requestPrincipals: ["https://id.example.com/*"]}], when: [{key: "request.auth.claims[groups]", values: [admin]}]}]}`,
		`shop/any-user-reads: {selector: {service: catalog}, rules: [{from: [{requestPrincipals: ["*"]}], to: [{methods: [GET]}]}]}`,
		`shop/no-banned: {selector: {service: catalog}, action: DENY, rules: [{when: [{key: "request.auth.claims[status]", values: [banned]}]}]}`,
	)
	e, err := Compile(pols, Options{TrustDomain: "trellis.local"})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(m map[string][]string) func(string) []string {
		return func(n string) []string { return m[n] }
	}
	for _, tc := range []struct {
		name  string
		r     Request
		allow bool
		by    string
	}{
		{"no token, GET", Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/"}, false, ""},
		{"user GET", Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/", RequestPrincipal: "https://id.example.com/alice"}, true, "shop/any-user-reads"},
		{"user POST without admin", Request{Principal: frontend, HTTP: true, Method: "POST", Path: "/", RequestPrincipal: "https://id.example.com/alice",
			Claim: claims(map[string][]string{"groups": {"ops"}})}, false, ""},
		{"admin POST", Request{Principal: frontend, HTTP: true, Method: "POST", Path: "/", RequestPrincipal: "https://id.example.com/alice",
			Claim: claims(map[string][]string{"groups": {"ops", "admin"}})}, true, "shop/admins-only"},
		{"admin of another issuer", Request{Principal: frontend, HTTP: true, Method: "POST", Path: "/", RequestPrincipal: "https://evil.example/alice",
			Claim: claims(map[string][]string{"groups": {"admin"}})}, false, ""},
		{"admin claim as a header only", Request{Principal: frontend, HTTP: true, Method: "POST", Path: "/",
			Header: func(n string) string { return map[string]string{"Groups": "admin"}[n] }}, false, ""},
		{"banned user", Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/", RequestPrincipal: "https://id.example.com/bob",
			Claim: claims(map[string][]string{"status": {"active", "banned"}})}, false, "shop/no-banned"},
		{"TCP", Request{Principal: frontend, Port: 80}, false, ""},
	} {
		d := e.Decide(&catalog, &tc.r)
		if d.Allow != tc.allow || (tc.by != "" && d.Policy != tc.by) {
			t.Errorf("%s: allow=%v by %q (%s), want allow=%v by %q", tc.name, d.Allow, d.Policy, d.Reason, tc.allow, tc.by)
		}
	}
}
