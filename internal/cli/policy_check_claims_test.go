package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// policy check simulates an end user's token: requestPrincipals and claim
// conditions decide as the proxies will.
func TestPolicyCheckSimulatesClaims(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admins-only, namespace: shop}
spec:
  selector: {service: frontend}
  action: ALLOW
  rules:
  - from: [{requestPrincipals: ["https://id.example.com/*"]}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
`, "apply", "-f", "-")
	check := func(args ...string) result {
		return m.run(t, "", append([]string{"policy", "check", "--from", "gateway.shop", "--to", "frontend.shop", "--path", "/orders"}, args...)...)
	}
	if r := check("--request-principal", "https://id.example.com/alice", "--claim", "groups=ops", "--claim", "groups=admin"); r.code != cli.ExitOK ||
		!strings.Contains(r.stdout, "decision:  ALLOW") || !strings.Contains(r.stdout, "shop/admins-only rule 0") || !strings.Contains(r.stdout, "claim groups=ops,admin") {
		t.Errorf("admin: %v", r)
	}
	for _, args := range [][]string{
		{},
		{"--request-principal", "https://id.example.com/alice", "--claim", "groups=ops"},
		{"--request-principal", "https://evil.example/alice", "--claim", "groups=admin"},
		{"--header", "groups=admin"},
	} {
		if r := check(args...); r.code != cli.ExitOK || !strings.Contains(r.stdout, "decision:  DENY") {
			t.Errorf("%v: %v\nwant DENY", args, r)
		}
	}
	if r := check("--claim", "groups=admin"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "needs --request-principal") {
		t.Errorf("--claim alone: %v", r)
	}
	if r := check("--request-principal", "alice"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "ISSUER/SUBJECT") {
		t.Errorf("--request-principal without an issuer: %v", r)
	}
}
