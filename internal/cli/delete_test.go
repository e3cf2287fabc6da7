package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

func TestDelete(t *testing.T) {
	m := startMeshWithPolicies(t)

	r := m.run(t, "", "delete", "authz", "frontend-reads-catalog", "-n", "shop")
	if want := "AuthorizationPolicy/shop/frontend-reads-catalog deleted\n"; r.code != cli.ExitOK || r.stdout != want {
		t.Fatalf("delete: got %v\nwant exit 0, stdout %q", r, want)
	}
	if _, ok := m.get(t, "authz", "shop", "frontend-reads-catalog"); ok {
		t.Error("frontend-reads-catalog still stored after delete")
	}
	r = m.run(t, "", "get", "authz", "frontend-reads-catalog", "-n", "shop")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "not found: AuthorizationPolicy shop/frontend-reads-catalog") {
		t.Errorf("get after delete: got %v\nwant exit 1 and a not-found message", r)
	}
	// Only the named policy went.
	var left []string
	for _, o := range m.list(t, "authz") {
		left = append(left, o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	if got, want := strings.Join(left, " "), "ops/deny-debug shop/monitoring-scrapes"; got != want {
		t.Errorf("policies left: got %s, want %s", got, want)
	}

	r = m.run(t, "", "delete", "authorizationpolicies", "deny-debug", "--namespace", "ops")
	if want := "AuthorizationPolicy/ops/deny-debug deleted\n"; r.code != cli.ExitOK || r.stdout != want {
		t.Fatalf("delete: got %v\nwant exit 0, stdout %q", r, want)
	}
}

func TestDeleteErrors(t *testing.T) {
	m := startMeshWithPolicies(t)
	meshBefore, _ := m.storedMesh(t)
	policiesBefore := m.list(t, "authz")
	for _, tc := range []struct {
		args       []string
		wantStderr []string
	}{
		{[]string{"mesh", "default"}, []string{`the Mesh "default" always exists`, "apply a changed Mesh instead"}},
		{[]string{"meshes", "default"}, []string{`the Mesh "default" always exists`}},
		{[]string{"authz", "frontend-reads-catalog"}, []string{"not found: AuthorizationPolicy default/frontend-reads-catalog"}},
		{[]string{"authz", "nope", "-n", "shop"}, []string{"not found: AuthorizationPolicy shop/nope"}},
		{[]string{"authz"}, []string{"want KIND NAME"}},
		{[]string{"gateway", "edge"}, []string{`unknown kind "gateway"`, "known kinds: meshes, authorizationpolicies"}},
		{[]string{"authz", "deny-debug", "-A"}, []string{"unknown shorthand flag: 'A'"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"delete"}, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" {
				t.Errorf("got %v\nwant exit %d and no stdout", r, cli.ExitUser)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, want)
				}
			}
		})
	}
	if meshAfter, _ := m.storedMesh(t); !sameObjects(t, meshAfter, meshBefore) {
		t.Errorf("failed deletes changed the Mesh:\ngot  %+v\nwant %+v", meshAfter, meshBefore)
	}
	if got := m.list(t, "authz"); !sameObjects(t, got, policiesBefore) {
		t.Errorf("failed deletes changed the policies:\ngot  %+v\nwant %+v", got, policiesBefore)
	}
}
