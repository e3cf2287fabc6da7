package controlplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// policyIn is an AuthorizationPolicy named name in namespace ns.
func policyIn(t *testing.T, ns, name string) []resource.Object {
	t.Helper()
	return decode(t, fmt.Sprintf(`
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:
  selector: {service: catalog}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/%s/sa/frontend"]}]
`, name, ns, ns))
}

const meshYAML = `
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {}
`

// mint creates an admin token as root and returns a client holding it.
func mint(t *testing.T, cp *cptest.ControlPlane, req adminapi.CreateAdminTokenRequest) *adminapi.Client {
	t.Helper()
	resp, err := cp.Client(t).CreateAdminToken(t.Context(), req)
	if err != nil {
		t.Fatalf("create admin token %+v: %v", req, err)
	}
	return as(t, cp, resp.Token)
}

// as is an admin API client holding token.
func as(t *testing.T, cp *cptest.ControlPlane, token string) *adminapi.Client {
	t.Helper()
	c := cp.Client(t)
	c.Token = token
	return c
}

// statusOf is the HTTP status of err (200 for nil, 0 for a transport error).
func statusOf(err error) int {
	var se *adminapi.StatusError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &se):
		return se.Status
	}
	return 0
}

// TestAdminRoutesHavePermissions walks every registered admin route: each
// has a known permission, and a token without it is refused with a 403
// that names it before the handler runs, while a token with it is not.
func TestAdminRoutesHavePermissions(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	routes := cp.AdminRoutes()
	if len(routes) < 20 {
		t.Fatalf("only %d admin routes", len(routes))
	}
	tokens := map[adminauth.Role]string{}
	for _, role := range adminauth.Roles() {
		resp, err := cp.Client(t).CreateAdminToken(t.Context(), adminapi.CreateAdminTokenRequest{Name: string(role), Role: string(role)})
		if err != nil {
			t.Fatal(err)
		}
		tokens[role] = resp.Token
	}
	seen := map[string]bool{}
	for _, rt := range routes {
		if !slices.Contains(adminauth.Permissions(), rt.Permission) {
			t.Errorf("route %s: permission %q is not one of adminauth.Permissions()", rt.Pattern, rt.Permission)
			continue
		}
		if seen[rt.Pattern] {
			t.Errorf("route %s listed twice", rt.Pattern)
		}
		seen[rt.Pattern] = true
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{plural}", "authorizationpolicies", "{namespace}", "nowhere", "{name}", "none",
			"{id}", "none", "{instance}", "none").Replace(path)
		for _, role := range adminauth.Roles() {
			req, _ := http.NewRequest(method, cp.APIURL()+path, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+tokens[role])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			refused := resp.StatusCode == http.StatusForbidden
			if want := !role.Has(rt.Permission); refused != want {
				t.Errorf("%s as %s: got %d %s; want refused=%v", rt.Pattern, role, resp.StatusCode, body[:n], want)
			}
			if refused && !strings.Contains(string(body[:n]), "lacks permission "+string(rt.Permission)) {
				t.Errorf("%s as %s: 403 body %s does not name permission %s", rt.Pattern, role, body[:n], rt.Permission)
			}
		}
	}
	// Every admin API path the client knows is in the table.
	for _, p := range []string{adminapi.PathApply, adminapi.PathTokens, adminapi.PathProxies, adminapi.PathServices, adminapi.PathGraph,
		adminapi.PathShapes, adminapi.PathAlerts, adminapi.PathAuditVerify, adminapi.PathCA, adminapi.PathCARotate,
		adminapi.PathCARetireOld, adminapi.PathAdminTokens, adminapi.PathResource + "/{plural}"} {
		found := false
		for pat := range seen {
			_, path, _ := strings.Cut(pat, " ")
			found = found || path == p
		}
		if !found {
			t.Errorf("no admin route for %s", p)
		}
	}
}

// TestRolesPermissionClasses: each role against each class of action.
func TestRolesPermissionClasses(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := t.Context()
	if _, err := cp.Client(t).Apply(ctx, policyIn(t, "shop", "seed"), false); err != nil {
		t.Fatal(err)
	}
	ap, _ := resource.LookupKind("authorizationpolicies")
	mk, _ := resource.LookupKind("meshes")
	actions := []struct {
		name string
		perm adminauth.Permission
		do   func(c *adminapi.Client, role string) error
	}{
		{"list policies", adminauth.ResourcesRead, func(c *adminapi.Client, _ string) error { _, err := c.List(ctx, ap, ""); return err }},
		{"get mesh", adminauth.ResourcesRead, func(c *adminapi.Client, _ string) error { _, err := c.Get(ctx, mk, "", "default"); return err }},
		{"status", adminauth.StatusRead, func(c *adminapi.Client, _ string) error { _, err := c.ListProxies(ctx, ""); return err }},
		{"ca status", adminauth.StatusRead, func(c *adminapi.Client, _ string) error { _, err := c.CAStatus(ctx); return err }},
		{"apply policy", adminauth.ResourcesWrite, func(c *adminapi.Client, role string) error {
			_, err := c.Apply(ctx, policyIn(t, "shop", "by-"+role), false)
			return err
		}},
		{"apply mesh", adminauth.ResourcesWrite, func(c *adminapi.Client, _ string) error {
			_, err := c.Apply(ctx, decode(t, meshYAML), false)
			return err
		}},
		{"delete policy", adminauth.ResourcesWrite, func(c *adminapi.Client, role string) error {
			err := c.Delete(ctx, ap, "shop", "by-"+role)
			if statusOf(err) == http.StatusNotFound {
				return nil
			}
			return err
		}},
		{"create join token", adminauth.JoinTokensWrite, func(c *adminapi.Client, _ string) error {
			_, err := c.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
			return err
		}},
		{"list join tokens", adminauth.JoinTokensRead, func(c *adminapi.Client, _ string) error { _, err := c.ListTokens(ctx); return err }},
		{"retire old CA", adminauth.CAWrite, func(c *adminapi.Client, _ string) error {
			_, err := c.RetireOldCA(ctx)
			if statusOf(err) == http.StatusConflict { // nothing to retire: allowed, refused by the CA
				return nil
			}
			return err
		}},
		{"list admin tokens", adminauth.AdminTokensRead, func(c *adminapi.Client, _ string) error { _, err := c.ListAdminTokens(ctx); return err }},
		{"create admin token", adminauth.AdminTokensWrite, func(c *adminapi.Client, role string) error {
			_, err := c.CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Name: "minted-by-" + role, Role: "viewer"})
			return err
		}},
	}
	for _, role := range append(adminauth.Roles(), adminauth.Root) {
		c := cp.Client(t)
		if role != adminauth.Root {
			c = mint(t, cp, adminapi.CreateAdminTokenRequest{Name: string(role), Role: string(role)})
		}
		for _, a := range actions {
			err := a.do(c, string(role))
			got, want := statusOf(err), http.StatusOK
			if !role.Has(a.perm) {
				want = http.StatusForbidden
			}
			if got != want {
				t.Errorf("%s %s: got %d (%v), want %d", role, a.name, got, err, want)
			}
			if want == http.StatusForbidden && err != nil {
				wantMsg := fmt.Sprintf("forbidden: token %q (role %s) lacks permission %s", role, role, a.perm)
				if !strings.Contains(err.Error(), wantMsg) {
					t.Errorf("%s %s: error %q, want it to contain %q", role, a.name, err, wantMsg)
				}
			}
		}
	}
}

// TestNamespacedToken: a token limited to shop sees and changes only
// shop; cluster-scoped writes need a token for all namespaces.
func TestNamespacedToken(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := t.Context()
	root := cp.Client(t)
	for _, ns := range []string{"shop", "ops"} {
		if _, err := root.Apply(ctx, policyIn(t, ns, "seed"), false); err != nil {
			t.Fatal(err)
		}
	}
	ap, _ := resource.LookupKind("authorizationpolicies")
	mk, _ := resource.LookupKind("meshes")
	op := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "shop-ci", Role: "operator", Namespaces: []string{"shop"}})

	items, err := op.List(ctx, ap, "")
	if err != nil || len(items) != 1 || items[0].Metadata.Namespace != "shop" {
		t.Errorf("list all: got %d items (%v), want only shop/seed", len(items), err)
	}
	for _, tc := range []struct {
		name    string
		err     error
		want    int
		wantMsg string
	}{
		{"list own namespace", second(op.List(ctx, ap, "shop")), http.StatusOK, ""},
		{"list other namespace", second(op.List(ctx, ap, "ops")), http.StatusForbidden, "lacks permission resources.read in namespace ops"},
		{"get own", second(op.Get(ctx, ap, "shop", "seed")), http.StatusOK, ""},
		{"get other", second(op.Get(ctx, ap, "ops", "seed")), http.StatusForbidden, "lacks permission resources.read in namespace ops"},
		{"get mesh (cluster-scoped read)", second(op.Get(ctx, mk, "", "default")), http.StatusOK, ""},
		{"apply own", second(op.Apply(ctx, policyIn(t, "shop", "new"), false)), http.StatusOK, ""},
		{"apply other", second(op.Apply(ctx, policyIn(t, "ops", "new"), false)), http.StatusForbidden,
			`forbidden: token "shop-ci" (role operator, namespaces shop) lacks permission resources.write in namespace ops`},
		{"apply own and other together", second(op.Apply(ctx, append(policyIn(t, "shop", "two"), policyIn(t, "ops", "two")...), false)), http.StatusForbidden, "in namespace ops"},
		{"apply mesh", second(op.Apply(ctx, decode(t, meshYAML), false)), http.StatusForbidden, "needs a token for all namespaces"},
		{"delete other", op.Delete(ctx, ap, "ops", "seed"), http.StatusForbidden, "in namespace ops"},
		{"delete mesh", op.Delete(ctx, mk, "", "default"), http.StatusForbidden, "cluster-scoped"},
		{"delete own", op.Delete(ctx, ap, "shop", "new"), http.StatusOK, ""},
		{"proxies of other namespace", second(op.ListProxies(ctx, "ops")), http.StatusForbidden, "status.read in namespace ops"},
		{"shapes of every namespace", second(op.Shapes(ctx, "")), http.StatusForbidden, "lacks permission status.read in all namespaces"},
		{"shapes of another namespace", second(op.Shapes(ctx, "ops")), http.StatusForbidden, "status.read in namespace ops"},
		{"apply in trellis-system", second(op.Apply(ctx, policyIn(t, "trellis-system", "all"), false)), http.StatusForbidden, "whose resources act mesh-wide"},
		{"graph (mesh-wide)", second(op.Graph(ctx, time.Minute)), http.StatusForbidden, "cluster-scoped"},
	} {
		if got := statusOf(tc.err); got != tc.want || (tc.wantMsg != "" && !strings.Contains(fmt.Sprint(tc.err), tc.wantMsg)) {
			t.Errorf("%s: got %d %v, want %d %q", tc.name, got, tc.err, tc.want, tc.wantMsg)
		}
	}
	// Nothing of the refused apply was stored, in either namespace.
	for _, ns := range []string{"shop", "ops"} {
		if _, err := root.Get(ctx, ap, ns, "two"); statusOf(err) != http.StatusNotFound {
			t.Errorf("%s/two: got %v, want not found", ns, err)
		}
	}

	// Join tokens of a security-admin for shop: only shop.
	sec := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "shop-sec", Role: "security-admin", Namespaces: []string{"shop"}})
	other, err := root.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sec.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"}); err != nil {
		t.Errorf("join token in shop: %v", err)
	}
	if _, err := sec.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "ops"}); statusOf(err) != http.StatusForbidden {
		t.Errorf("join token in ops: got %v, want 403", err)
	}
	if _, err := sec.RevokeToken(ctx, other.Info.ID); statusOf(err) != http.StatusForbidden {
		t.Errorf("revoke a join token of ops: got %v, want 403", err)
	}
	toks, err := sec.ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Namespace != "shop" {
		t.Errorf("join tokens listed: %+v, %v; want the one of shop", toks, err)
	}
	if _, err := sec.RotateCA(ctx); statusOf(err) != http.StatusForbidden {
		t.Errorf("CA rotation by a namespaced security-admin: got %v, want 403", err)
	}
}

func second[T any](_ T, err error) error { return err }

// TestAdminTokenEscalation: a token never creates one with more power
// than its own, in role or namespaces.
func TestAdminTokenEscalation(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := t.Context()
	sec := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "sec", Role: "security-admin"})
	shopSec := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "shop-sec", Role: "security-admin", Namespaces: []string{"shop"}})
	op := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "op", Role: "operator"})
	for _, tc := range []struct {
		name    string
		by      *adminapi.Client
		req     adminapi.CreateAdminTokenRequest
		want    int
		wantMsg string
	}{
		{"security-admin mints viewer", sec, adminapi.CreateAdminTokenRequest{Role: "viewer"}, http.StatusCreated, ""},
		{"security-admin mints security-admin", sec, adminapi.CreateAdminTokenRequest{Role: "security-admin"}, http.StatusCreated, ""},
		{"security-admin mints operator", sec, adminapi.CreateAdminTokenRequest{Role: "operator"}, http.StatusForbidden, "lacks permission resources.write"},
		{"operator mints viewer", op, adminapi.CreateAdminTokenRequest{Role: "viewer"}, http.StatusForbidden, "lacks permission admintokens.write"},
		{"namespaced mints for all namespaces", shopSec, adminapi.CreateAdminTokenRequest{Role: "viewer"}, http.StatusForbidden, "for all namespaces"},
		{"namespaced mints for another", shopSec, adminapi.CreateAdminTokenRequest{Role: "viewer", Namespaces: []string{"shop", "ops"}}, http.StatusForbidden, "namespace ops"},
		{"namespaced mints for its own", shopSec, adminapi.CreateAdminTokenRequest{Role: "viewer", Namespaces: []string{"shop"}}, http.StatusCreated, ""},
		{"limited to the mesh namespace", cp.Client(t), adminapi.CreateAdminTokenRequest{Role: "operator", Namespaces: []string{"trellis-system"}}, http.StatusBadRequest, "mesh-wide"},
		{"root name is reserved", cp.Client(t), adminapi.CreateAdminTokenRequest{Name: "root", Role: "viewer"}, http.StatusBadRequest, ""},
		{"unknown role", cp.Client(t), adminapi.CreateAdminTokenRequest{Role: "admin"}, http.StatusBadRequest, "viewer, operator, security-admin"},
		{"ttl beyond the maximum", cp.Client(t), adminapi.CreateAdminTokenRequest{Role: "viewer", TTL: "10000h"}, http.StatusBadRequest, "ttl"},
		{"name of a valid token", cp.Client(t), adminapi.CreateAdminTokenRequest{Name: "op", Role: "viewer"}, http.StatusConflict, "revoke it first"},
	} {
		_, err := tc.by.CreateAdminToken(ctx, tc.req)
		got := statusOf(err)
		if got == http.StatusOK {
			got = http.StatusCreated
		}
		if got != tc.want || (tc.wantMsg != "" && !strings.Contains(fmt.Sprint(err), tc.wantMsg)) {
			t.Errorf("%s: got %d %v, want %d %q", tc.name, got, err, tc.want, tc.wantMsg)
		}
	}
	// A namespaced security-admin lists and revokes only tokens within its namespaces.
	items, err := shopSec.ListAdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if !slices.Equal(it.Namespaces, []string{"shop"}) {
			t.Errorf("shop-sec lists %s (namespaces %v)", it.Name, it.Namespaces)
		}
	}
	if _, err := shopSec.RevokeAdminToken(ctx, "sec"); statusOf(err) != http.StatusForbidden {
		t.Errorf("shop-sec revokes sec: got %v, want 403", err)
	}
}

// TestAdminTokenRevokeAndExpiry: a revoked or expired token is refused
// with 401 on its next call.
func TestAdminTokenRevokeAndExpiry(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := t.Context()
	mk, _ := resource.LookupKind("meshes")
	v := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "v", Role: "viewer"})
	if _, err := v.Get(ctx, mk, "", "default"); err != nil {
		t.Fatal(err)
	}
	info, err := cp.Client(t).RevokeAdminToken(ctx, "v")
	if err != nil || info.RevokedAt == nil || info.LastUsed == nil {
		t.Fatalf("revoke: %+v, %v; want revoked and last used", info, err)
	}
	if _, err := v.Get(ctx, mk, "", "default"); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), `admin token "v" was revoked`) {
		t.Errorf("revoked token: got %v, want 401 saying it was revoked", err)
	}
	// The name of a revoked token may be used again, with a new secret.
	v2 := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "v", Role: "viewer"})
	if _, err := v2.Get(ctx, mk, "", "default"); err != nil {
		t.Errorf("new token of the revoked one's name: %v", err)
	}
	if _, err := v.Get(ctx, mk, "", "default"); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("old secret after its name was reused: got %v, want 401", err)
	}

	short := mint(t, cp, adminapi.CreateAdminTokenRequest{Name: "short", Role: "viewer", TTL: "1s"})
	if _, err := short.Get(ctx, mk, "", "default"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := short.Get(ctx, mk, "", "default"); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: got %v, want 401 saying it expired", err)
	}
	if _, err := as(t, cp, "trellis-admin.v.0000").Get(ctx, mk, "", "default"); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("forged token: got %v, want 401", err)
	}
}

// TestAdminTokenAuditAndSecrecy: calls are audited with the token's name,
// and the secret appears in no list, log line or audit event.
func TestAdminTokenAuditAndSecrecy(t *testing.T) {
	logs := testutil.NewLogBuffer(t)
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := cptest.StartControlPlane(t, controlplane.Config{Logger: logs.Logger, AuditSinks: []string{"file://" + out}})
	ctx := context.Background()
	resp, err := cp.Client(t).CreateAdminToken(ctx, adminapi.CreateAdminTokenRequest{Name: "ci", Role: "operator", Namespaces: []string{"shop"}})
	if err != nil {
		t.Fatal(err)
	}
	ci := as(t, cp, resp.Token)
	if _, err := ci.Apply(ctx, policyIn(t, "shop", "p"), false); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.Apply(ctx, policyIn(t, "ops", "p"), false); statusOf(err) != http.StatusForbidden {
		t.Fatalf("apply in ops: %v, want 403", err)
	}
	if _, err := cp.Client(t).RevokeAdminToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.Apply(ctx, policyIn(t, "shop", "p2"), false); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("apply after revoke: %v, want 401", err)
	}
	items, err := cp.Client(t).ListAdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v", items); strings.Contains(s, resp.Token) {
		t.Errorf("list holds the secret: %s", s)
	}
	want := []string{"admintoken.created root", "resource.applied ci", "admin.refused ci", "admintoken.revoked root"}
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = got[:0]
		for _, ev := range readEvents(t, out) {
			attrs, _ := ev["attributes"].(map[string]any)
			got = append(got, fmt.Sprintf("%v %v", ev["kind"], attrs["actor"]))
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit events (kind actor): got %q, want %q", got, want)
	}
	data, _ := os.ReadFile(out)
	secretPart := resp.Token[strings.LastIndexByte(resp.Token, '.')+1:]
	if strings.Contains(string(data), secretPart) {
		t.Error("the admin token's secret reached the audit sink")
	}
	if logs.Contains(secretPart) {
		t.Error("the admin token's secret is in the log")
	}
	if !logs.Contains(`token=ci`) {
		t.Error("no log line names token ci")
	}
}

// readEvents reads the JSON lines of a file sink.
func readEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("sink line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}
