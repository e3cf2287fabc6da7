package controlplane_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

func mustKind(t *testing.T, name string) resource.KindInfo {
	t.Helper()
	k, ok := resource.LookupKind(name)
	if !ok {
		t.Fatalf("kind %q not known", name)
	}
	return k
}

func decode(t *testing.T, yamlDocs string) []resource.Object {
	t.Helper()
	objs, err := resource.Decode([]byte(yamlDocs), "test.yaml")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return objs
}

const policyYAML = `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog, namespace: shop}
spec:
  selector: {service: catalog}
  action: ALLOW
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to:   [{methods: [GET], paths: ["/items", "/items/*"]}]
`

func TestFirstStartWritesDataDir(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{"", 0o700},
		{controlplane.AdminTokenFile, 0o600},
		{"ca/root.key", 0o600},
		{"ca/intermediate.key", 0o600},
		{"ca/token-signing.key", 0o600},
	} {
		fi, err := os.Stat(filepath.Join(cp.DataDir, tc.path))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tc.mode {
			t.Errorf("%s: mode %04o, want %04o", tc.path, got, tc.mode)
		}
	}
	raw, err := hex.DecodeString(cp.Token)
	if err != nil || len(raw) < 32 {
		t.Errorf("admin token %q: want at least 256 random bits in hex (err %v)", cp.Token, err)
	}
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 1 || !roots[0].IsCA {
		t.Errorf("ca.crt: got %d certs, want one CA root", len(roots))
	}
	if cp.TrustDomain() != controlplane.DefaultTrustDomain {
		t.Errorf("trust domain %q, want %q", cp.TrustDomain(), controlplane.DefaultTrustDomain)
	}

	m, err := cp.Client(t).Get(context.Background(), mustKind(t, "mesh"), "", "default")
	if err != nil {
		t.Fatalf("get default mesh: %v", err)
	}
	spec, err := resource.MeshSpecOf(&m)
	if err != nil {
		t.Fatal(err)
	}
	if spec.MTLS.Mode != "STRICT" || spec.Authorization.Default != "deny" || spec.Certificates.WorkloadTTL.String() != "24h0m0s" {
		t.Errorf("default mesh spec = %+v, want STRICT, deny, 24h", spec)
	}
	if m.Metadata.ResourceVersion == "" || m.Metadata.CreationTimestamp == nil || m.Metadata.UID == "" {
		t.Errorf("default mesh metadata lacks resourceVersion/timestamps/uid: %+v", m.Metadata)
	}
}

func TestAdminAPIAuth(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	base := cp.APIURL()
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/api/v1/resources/meshes", "", http.StatusUnauthorized},
		{"/api/v1/resources/meshes", "wrong", http.StatusUnauthorized},
		{"/api/v1/resources/meshes", cp.Token + "x", http.StatusUnauthorized},
		{"/api/v1/resources/meshes", cp.Token[:len(cp.Token)-1], http.StatusUnauthorized},
		{"/api/v1/resources/meshes", cp.Token, http.StatusOK},
		{"/api/v1/no-such-thing", "", http.StatusUnauthorized},
		{"/no-such-path", "", http.StatusUnauthorized},
		{"/api/v1/no-such-thing", cp.Token, http.StatusNotFound},
		{"/api/v1/resources/widgets", cp.Token, http.StatusNotFound},
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
		{"/metrics", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s (token %q): status %d, want %d; body %s", tc.path, tc.token, resp.StatusCode, tc.want, body)
			continue
		}
		if tc.want == http.StatusUnauthorized {
			var eb adminapi.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || !strings.Contains(eb.Error, "admin.token") {
				t.Errorf("GET %s: 401 body %s, want JSON error pointing at admin.token", tc.path, body)
			}
			if strings.Contains(string(body), cp.Token) {
				t.Errorf("GET %s: 401 body leaks the admin token", tc.path)
			}
		}
		if tc.path == "/metrics" && !strings.Contains(string(body), "trellis_ca_intermediate_expiry_timestamp_seconds") {
			t.Errorf("/metrics lacks trellis_ca_intermediate_expiry_timestamp_seconds")
		}
	}
}

func TestApplyGetListDelete(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	ctx := context.Background()
	authz := mustKind(t, "authz")

	apply := func(docs string) []adminapi.ApplyResult {
		t.Helper()
		resp, err := c.Apply(ctx, decode(t, docs), false)
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		return resp.Results
	}
	res := apply(policyYAML)
	if len(res) != 1 || res[0].Result != adminapi.ResultCreated || res[0].Namespace != "shop" || res[0].Kind != "AuthorizationPolicy" {
		t.Fatalf("first apply = %+v, want one created AuthorizationPolicy in shop", res)
	}
	if res = apply(policyYAML); res[0].Result != adminapi.ResultUnchanged {
		t.Errorf("second apply = %q, want unchanged", res[0].Result)
	}
	changed := strings.Replace(policyYAML, "action: ALLOW", "action: DENY", 1)
	if res = apply(changed); res[0].Result != adminapi.ResultConfigured {
		t.Errorf("changed apply = %q, want configured", res[0].Result)
	}

	got, err := c.Get(ctx, authz, "shop", "frontend-reads-catalog")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := resource.AuthorizationPolicySpecOf(&got)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Action != "DENY" || spec.Enforcement != "enforce" || got.Metadata.Generation != 2 {
		t.Errorf("stored policy action %q enforcement %q generation %d, want DENY, enforce (default), 2", spec.Action, spec.Enforcement, got.Metadata.Generation)
	}
	if got.Metadata.ResourceVersion != res[0].ResourceVersion {
		t.Errorf("resourceVersion %q, want %q from apply", got.Metadata.ResourceVersion, res[0].ResourceVersion)
	}

	other := strings.Replace(policyYAML, "namespace: shop", "namespace: billing", 1)
	apply(other)
	for _, tc := range []struct {
		ns   string
		want int
	}{{"shop", 1}, {"billing", 1}, {"", 2}, {"empty", 0}} {
		items, err := c.List(ctx, authz, tc.ns)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != tc.want {
			t.Errorf("list namespace %q: %d items, want %d", tc.ns, len(items), tc.want)
		}
	}

	if err := c.Delete(ctx, authz, "shop", "frontend-reads-catalog"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, authz, "shop", "frontend-reads-catalog")
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("get after delete: %v, want 404", err)
	}
	err = c.Delete(ctx, authz, "shop", "frontend-reads-catalog")
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("second delete: %v, want 404", err)
	}
	err = c.Delete(ctx, mustKind(t, "mesh"), "", "default")
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Error(), "apply a changed Mesh") {
		t.Errorf("delete mesh: %v, want 400 saying to apply a changed Mesh", err)
	}
}

func TestApplyBatchIsAllOrNothing(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	ctx := context.Background()
	good := decode(t, policyYAML)[0]
	bad := decode(t, strings.NewReplacer("frontend-reads-catalog", "second", "[GET]", "[GTE]").Replace(policyYAML))[0]

	_, err := c.Apply(ctx, []resource.Object{good, bad}, false)
	var se *adminapi.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity {
		t.Fatalf("apply with a bad object: %v, want 422", err)
	}
	if len(se.Body.Details) != 1 || se.Body.Details[0].Index != 1 || se.Body.Details[0].Field != "spec.rules[0].to[0].methods[0]" ||
		!strings.Contains(se.Body.Details[0].Resource, "shop/second") || !strings.Contains(se.Body.Details[0].Message, `"GTE" is not an HTTP method`) {
		t.Errorf("details = %+v, want object 1, shop/second, spec.rules[0].to[0].methods[0], GTE message", se.Body.Details)
	}
	items, err := c.List(ctx, mustKind(t, "authz"), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 0 {
		t.Errorf("after a failed batch, %d policies stored, want 0", len(items))
	}

	// Dry run stores nothing.
	resp, err := c.Apply(ctx, []resource.Object{good}, true)
	if err != nil || resp.Results[0].Result != adminapi.ResultCreated {
		t.Fatalf("dry run: %+v, %v", resp, err)
	}
	if items, _ := c.List(ctx, mustKind(t, "authz"), ""); len(items) != 0 {
		t.Errorf("dry run stored %d policies", len(items))
	}

	// The same resource twice in a batch is refused.
	_, err = c.Apply(ctx, []resource.Object{good, good}, false)
	if !errors.As(err, &se) || se.Status != http.StatusConflict {
		t.Errorf("duplicate in batch: %v, want 409", err)
	}

	// A stale resourceVersion is refused; nothing in the batch is applied.
	if _, err := c.Apply(ctx, []resource.Object{good}, false); err != nil {
		t.Fatal(err)
	}
	stale := good
	stale.Metadata.ResourceVersion = "1"
	third := decode(t, strings.Replace(policyYAML, "frontend-reads-catalog", "third", 1))[0]
	_, err = c.Apply(ctx, []resource.Object{third, stale}, false)
	if !errors.As(err, &se) || se.Status != http.StatusConflict || !strings.Contains(se.Error(), "modified since you read it") {
		t.Errorf("stale resourceVersion: %v, want 409 modified since you read it", err)
	}
	if _, err := c.Get(ctx, mustKind(t, "authz"), "shop", "third"); err == nil {
		t.Errorf("object before the conflicting one was applied")
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	cp := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir, TrustDomain: "example.org"})
	ctx := context.Background()
	if _, err := cp.Client(t).Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	tok, err := cp.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	rootBefore, _ := os.ReadFile(filepath.Join(dir, identity.RootCertFile))
	adminBefore := cp.Token
	cp.Stop(t)

	cp2 := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir})
	if cp2.TrustDomain() != "example.org" {
		t.Errorf("trust domain after restart %q, want example.org", cp2.TrustDomain())
	}
	if cp2.Token != adminBefore {
		t.Errorf("admin token changed across restart")
	}
	rootAfter, _ := os.ReadFile(filepath.Join(dir, identity.RootCertFile))
	if string(rootBefore) != string(rootAfter) {
		t.Errorf("ca.crt changed across restart")
	}
	got, err := cp2.Client(t).Get(ctx, mustKind(t, "authz"), "shop", "frontend-reads-catalog")
	if err != nil {
		t.Fatalf("policy after restart: %v", err)
	}
	if got.Metadata.Name != "frontend-reads-catalog" {
		t.Errorf("got %q", got.Metadata.Name)
	}
	toks, err := cp2.Client(t).ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].ID != tok.Info.ID {
		t.Errorf("tokens after restart = %+v, %v; want the one issued before", toks, err)
	}
	// The token issued before the restart still works.
	certify(t, cp2, tok.Token, "spiffe://example.org/ns/shop/sa/web")
}

func TestTrustDomainIsFixed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	cp := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir, TrustDomain: "a.example"})
	cp.Stop(t)
	st := cptest.OpenStore(t, dir)
	defer st.Close()
	_, err := controlplane.New(context.Background(), controlplane.Config{DataDir: dir, Store: st, TrustDomain: "b.example", GRPCAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), `"b.example"`) || !strings.Contains(err.Error(), `"a.example"`) || !strings.Contains(err.Error(), "--trust-domain") {
		t.Errorf("restart with another trust domain: %v, want an error naming both and the flag", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg     controlplane.Config
		noStore bool
		want    string
	}{
		{controlplane.Config{}, false, "--data-dir is required"},
		{controlplane.Config{DataDir: t.TempDir(), GRPCAddr: "nope"}, false, "--grpc-addr"},
		{controlplane.Config{DataDir: t.TempDir(), APIAddr: "nope"}, false, "--api-addr"},
		{controlplane.Config{DataDir: t.TempDir(), CACertFile: "x.pem"}, false, "--ca-cert and --ca-key"},
		{controlplane.Config{DataDir: t.TempDir(), TrustDomain: "Not A Domain"}, false, "--trust-domain"},
		{controlplane.Config{DataDir: t.TempDir()}, true, "no Store"},
	} {
		if tc.cfg.DataDir != "" && !tc.noStore {
			st := cptest.OpenStore(t, tc.cfg.DataDir)
			defer st.Close()
			tc.cfg.Store = st
		}
		tc.cfg.Logger = testutil.Logger(t)
		_, err := controlplane.New(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestCreateTokenErrors(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	for _, tc := range []struct {
		req   adminapi.CreateTokenRequest
		field string
	}{
		{adminapi.CreateTokenRequest{}, "service"},
		{adminapi.CreateTokenRequest{Service: "Web"}, "service"},
		{adminapi.CreateTokenRequest{Service: "web", Namespace: "a_b"}, "namespace"},
		{adminapi.CreateTokenRequest{Service: "web", ServiceAccount: "-x"}, "serviceAccount"},
		{adminapi.CreateTokenRequest{Service: "web", TTL: "soon"}, "ttl"},
		{adminapi.CreateTokenRequest{Service: "web", TTL: "-1h"}, "ttl"},
		{adminapi.CreateTokenRequest{Service: "web", TTL: "10000h"}, "ttl"},
	} {
		_, err := c.CreateToken(context.Background(), tc.req)
		var se *adminapi.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest || len(se.Body.Details) != 1 || se.Body.Details[0].Field != tc.field {
			t.Errorf("CreateToken(%+v) = %v, want 400 naming field %s", tc.req, err, tc.field)
		}
	}
	if _, err := c.RevokeToken(context.Background(), "no-such-id"); !adminapi.IsUserError(err) {
		t.Errorf("revoke unknown id: %v, want 404", err)
	}
}

// TestInjectedStore: the control plane keeps its state in the store it is
// given and leaves it open for its owner after Close.
func TestInjectedStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	st := cptest.OpenStore(t, dir)
	defer st.Close()
	cp := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir, Store: st})
	if _, err := cp.Client(t).Apply(context.Background(), decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	cp.Stop(t)

	kvs, _, err := st.List(context.Background(), "/resources/")
	if err != nil {
		t.Fatalf("List after Close: %v, want the store still open", err)
	}
	found := false
	for _, kv := range kvs {
		found = found || strings.HasSuffix(kv.Key, "/shop/frontend-reads-catalog")
	}
	if !found {
		t.Errorf("applied policy not in the injected store; keys: %v", kvs)
	}
}
