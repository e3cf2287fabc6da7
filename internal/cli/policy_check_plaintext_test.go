package cli_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestPolicyCheckPlaintext: --from plaintext is a caller without a
// certificate. Under STRICT the proxy refuses it before any policy, so
// even a rule open to everyone does not let it in; under PERMISSIVE the
// policies decide, and it has no identity to match.
func TestPolicyCheckPlaintext(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml", "testdata/policy/plaintext.yaml")
	mtlsRequired := verdict{"DENY", "", -1, "mTLS required: the mesh's mtls.mode is STRICT, so the proxy refuses a plaintext connection before any policy", "mtls-required"}
	openHealth := verdict{"ALLOW", "shop/open-health", 0, "allowed by an ALLOW policy", "allow-policy"}
	tests := []struct {
		name       string
		args       []string
		strict     verdict
		permissive verdict
	}{
		{"rule open to every caller", []string{"--path", "/health"}, mtlsRequired, openHealth},
		{"rule for a principal", []string{"--path", "/items"}, mtlsRequired, noAllowMatched},
		{"DENY without identity conditions", []string{"--path", "/admin"}, mtlsRequired, deniedByAdmin},
		{"TCP", []string{"--tcp"}, mtlsRequired, deniedByAdmin},
		{"any case", []string{"--path", "/health", "--from", "PLAINTEXT"}, mtlsRequired, openHealth},
	}
	check := func(t *testing.T, args []string, want verdict) {
		t.Helper()
		if !slices.Contains(args, "--from") {
			args = append(args, "--from", "plaintext")
		}
		got, r := m.mustCheck(t, append(args, "--to", "catalog.shop")...)
		if got.verdict() != want || got.From != "" || got.FromService != "" {
			t.Errorf("got %+v from %q (%q), want %+v from \"\"", got.verdict(), got.From, got.FromService, want)
		}
		if want.Cause == "mtls-required" && len(got.Audit) != 0 {
			t.Errorf("audit %+v: a refused connection reaches no policy, audit or not", got.Audit)
		}
		if wantNote := "PERMISSIVE, so a plaintext caller reaches the policies"; (want.Cause != "mtls-required") != strings.Contains(r.stderr, wantNote) {
			t.Errorf("stderr %q: want the PERMISSIVE note exactly when the policies decide", r.stderr)
		}
	}
	for _, tc := range tests {
		t.Run("STRICT/"+tc.name, func(t *testing.T) { check(t, tc.args, tc.strict) })
	}
	r := m.run(t, "", "policy", "check", "--from", "plaintext", "--to", "catalog.shop", "--path", "/health")
	if r.code != cli.ExitOK {
		t.Fatalf("got %v, want exit 0", r)
	}
	testutil.Golden(t, "policy-check-plaintext-strict.golden", r.stdout)

	m.mustApply(t, "testdata/policy/mesh-permissive.yaml")
	for _, tc := range tests {
		t.Run("PERMISSIVE/"+tc.name, func(t *testing.T) { check(t, tc.args, tc.permissive) })
	}
}

// TestPolicyCheckMalformedFrom: a --from that is none of the three forms
// is refused before the API is asked, naming the flag and the forms.
func TestPolicyCheckMalformedFrom(t *testing.T) {
	clearEnv(t)
	api := closedAPI(t)
	const forms = "write spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT or SERVICE.NAMESPACE, or plaintext for a caller without mTLS"
	for _, tc := range []struct {
		from, want string
	}{
		{"frontend", `--from "frontend": want a SPIFFE ID (spiffe://trellis.local/ns/shop/sa/frontend) or SERVICE.NAMESPACE (frontend.shop), or plaintext for a caller without mTLS`},
		{"frontend.shop.svc", `--from "frontend.shop.svc": want a SPIFFE ID`},
		{"https://frontend.shop", `--from "https://frontend.shop": want a SPIFFE ID`},
		{"plain text", `--from "plain text": want a SPIFFE ID`},
		{"Frontend.Shop", `--from "Frontend.Shop": names are lower case; did you mean "frontend.shop"?`},
		{"spiffe://trellis.local/frontend", `--from "spiffe://trellis.local/frontend": not a workload identity (its path must be /ns/NAMESPACE/sa/ACCOUNT); ` + forms},
		{"spiffe://trellis.local/ns/shop/sa/web/v2", `not a workload identity`},
		{"spiffe://trellis.local/ns/shop/serviceaccount/web", `not a workload identity`},
		{"spiffe://trellis.local", `not a workload identity`},
		{"spiffe://trellis.local/ns/shop/sa/", `--from "spiffe://trellis.local/ns/shop/sa/": `},
		{"SPIFFE://trellis.local/ns/shop/sa/web", forms},
		{"spiffe:/trellis.local/ns/shop/sa/web", forms},
	} {
		t.Run(tc.from, func(t *testing.T) {
			r := run(t, "", "--api", api, "--token", "x", "policy", "check", "--from", tc.from, "--to", "catalog.shop")
			if r.code != cli.ExitUser || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("got %v\nwant exit 1 and stderr containing %q", r, tc.want)
			}
			if !strings.Contains(r.stderr, "policy check: --from ") {
				t.Errorf("stderr %q does not name --from", r.stderr)
			}
		})
	}
}
