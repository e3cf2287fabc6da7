package adminauth_test

import (
	"errors"
	"testing"

	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/policy"
)

// TestAuthorize: the role decides the permission, the namespaces where;
// cluster-scoped actions and the mesh namespace need an unscoped
// principal.
func TestAuthorize(t *testing.T) {
	if adminauth.MeshNamespace != policy.MeshNamespace {
		t.Fatalf("MeshNamespace %q, the policy engine's is %q", adminauth.MeshNamespace, policy.MeshNamespace)
	}
	op := adminauth.Principal{Name: "op", Role: adminauth.Operator}
	shopOp := adminauth.Principal{Name: "shop-op", Role: adminauth.Operator, Namespaces: []string{"shop"}}
	// No token may be limited to the mesh namespace, but the check must
	// hold even for one that somehow is.
	meshOp := adminauth.Principal{Name: "mesh-op", Role: adminauth.Operator, Namespaces: []string{adminauth.MeshNamespace}}
	for _, tc := range []struct {
		p       adminauth.Principal
		perm    adminauth.Permission
		ns      string
		cluster bool
		want    string
	}{
		{op, adminauth.ResourcesWrite, "shop", false, ""},
		{op, adminauth.ResourcesWrite, "", true, ""},
		{op, adminauth.CAWrite, "", true, `forbidden: token "op" (role operator) lacks permission ca.write`},
		{shopOp, adminauth.ResourcesWrite, "shop", false, ""},
		{shopOp, adminauth.ResourcesRead, "", false, ""},
		{shopOp, adminauth.ResourcesWrite, "ops", false, `forbidden: token "shop-op" (role operator, namespaces shop) lacks permission resources.write in namespace ops`},
		{shopOp, adminauth.ResourcesWrite, "", true, `forbidden: token "shop-op" is limited to namespaces shop; permission resources.write on cluster-scoped things (and in trellis-system, whose resources act mesh-wide) needs a token for all namespaces`},
		{meshOp, adminauth.ResourcesWrite, adminauth.MeshNamespace, false, `forbidden: token "mesh-op" is limited to namespaces trellis-system; permission resources.write on cluster-scoped things (and in trellis-system, whose resources act mesh-wide) needs a token for all namespaces`},
		{adminauth.RootPrincipal(), adminauth.AdminTokensWrite, "", true, ""},
	} {
		err := adminauth.Authorize(tc.p, tc.perm, tc.ns, tc.cluster)
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, adminauth.ErrForbidden) {
				t.Errorf("%v is not ErrForbidden", err)
			}
		}
		if got != tc.want {
			t.Errorf("Authorize(%s, %s, %q, %v):\ngot  %q\nwant %q", tc.p.Name, tc.perm, tc.ns, tc.cluster, got, tc.want)
		}
	}
	if meshOp.InNamespace(adminauth.MeshNamespace) {
		t.Error("a namespaced principal sees the mesh namespace")
	}
}

// TestRolesCumulative: viewer's permissions are in every role; operator
// and security-admin share nothing else; root has all.
func TestRolesCumulative(t *testing.T) {
	for _, perm := range adminauth.Viewer.Permissions() {
		for _, r := range append(adminauth.Roles(), adminauth.Root) {
			if !r.Has(perm) {
				t.Errorf("%s lacks viewer's %s", r, perm)
			}
		}
	}
	for _, perm := range adminauth.Operator.Permissions() {
		if !adminauth.Viewer.Has(perm) && adminauth.SecurityAdmin.Has(perm) {
			t.Errorf("security-admin has operator's %s", perm)
		}
	}
	for _, perm := range adminauth.Permissions() {
		if !adminauth.Root.Has(perm) {
			t.Errorf("root lacks %s", perm)
		}
	}
}
