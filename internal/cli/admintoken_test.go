package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// TestAdminTokenCommands: create prints the token on its last line and
// that token works with its role's limits; list never shows it; a refusal
// is exit 1 with the missing permission; revoke takes effect at once.
func TestAdminTokenCommands(t *testing.T) {
	m := startMesh(t)
	r := m.run(t, "", "admin-token", "create", "--role", "viewer", "--name", "ci-view", "--namespace", "shop,ops", "--namespace", "dev", "--ttl", "1h")
	if r.code != cli.ExitOK {
		t.Fatalf("admin-token create: %v", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) < 2 || !strings.Contains(r.stdout, `admin token "ci-view", role viewer, namespaces dev,ops,shop`) {
		t.Fatalf("stdout %q: want the token's description, then the token", r.stdout)
	}
	secret := lines[len(lines)-1]
	if !strings.HasPrefix(secret, "trellis-admin.ci-view.") {
		t.Fatalf("last line %q is not an admin token", secret)
	}
	tokenFile := filepath.Join(t.TempDir(), "ci.token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	as := func(args ...string) result {
		return run(t, "", append([]string{"--api", m.APIURL(), "--token-file", tokenFile}, args...)...)
	}
	if r := as("get", "authorizationpolicies", "-n", "shop"); r.code != cli.ExitOK {
		t.Errorf("viewer get in shop: %v", r)
	}
	policy := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(policy, []byte(`apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec: {selector: {service: catalog}, action: ALLOW, rules: [{from: [{principals: ["spiffe://trellis.local/ns/shop/sa/web"]}]}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = as("apply", "-f", policy)
	wantMsg := `forbidden: token "ci-view" (role viewer, namespaces dev,ops,shop) lacks permission resources.write`
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, wantMsg) {
		t.Errorf("viewer apply: got %v; want exit %d and %q", r, cli.ExitUser, wantMsg)
	}
	if r := as("get", "authorizationpolicies", "-n", "prod"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "lacks permission resources.read in namespace prod") {
		t.Errorf("viewer get in prod: %v", r)
	}
	if r := as("admin-token", "create", "--role", "viewer"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "lacks permission admintokens.write") {
		t.Errorf("viewer creates a token: %v", r)
	}

	r = m.run(t, "", "admin-token", "list")
	if r.code != cli.ExitOK || !strings.HasPrefix(r.stdout, "NAME ") || !strings.Contains(r.stdout, "ci-view ") || !strings.Contains(r.stdout, "dev,ops,shop") {
		t.Errorf("admin-token list: %v", r)
	}
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, secret[strings.LastIndexByte(secret, '.')+1:]) {
		t.Errorf("admin-token list shows the secret:\n%s", r.stdout)
	}

	if r := m.run(t, "", "admin-token", "revoke", "ci-view"); r.code != cli.ExitOK || !strings.Contains(r.stdout, `admin token "ci-view" (role viewer) revoked`) {
		t.Errorf("admin-token revoke: %v", r)
	}
	if r := as("get", "meshes"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "revoked") {
		t.Errorf("revoked token: %v", r)
	}
	if r := m.run(t, "", "admin-token", "list"); !strings.Contains(r.stdout, "revoked") {
		t.Errorf("list after revoke: %v", r)
	}
	if r := m.run(t, "", "admin-token", "create"); r.code != cli.ExitUser || !strings.Contains(r.stderr, "--role is required") {
		t.Errorf("create without --role: %v", r)
	}
	if r := m.run(t, "", "admin-token", "revoke", "nope"); r.code != cli.ExitUser {
		t.Errorf("revoke unknown: %v", r)
	}
}
