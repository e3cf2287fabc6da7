package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestImportIstio converts Istio files with and without parts that do not
// convert: golden stdout, stderr and exit code; the output validates.
func TestImportIstio(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		file, golden string
		code         int
	}{
		{"testdata/import/clean.yaml", "import-istio-clean.golden", cli.ExitOK},
		{"testdata/import/istio.yaml", "import-istio-dropped.golden", cli.ExitUser},
	} {
		r := run(t, "", "import", "istio", "-f", tc.file)
		if r.code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%v", tc.file, r.code, tc.code, r)
		}
		testutil.Golden(t, tc.golden, r.String())
		objs, err := resource.Decode([]byte(r.stdout), "stdout")
		if err != nil {
			t.Fatalf("%s: output does not decode: %v", tc.file, err)
		}
		for i := range objs {
			if err := resource.Validate(&objs[i]); err != nil {
				t.Errorf("%s: output does not validate: %v", tc.file, err)
			}
		}
	}
}

// TestImportIstioApplies pipes the converted output into trellis apply -f -.
func TestImportIstioApplies(t *testing.T) {
	m := startMesh(t)
	r := run(t, "", "import", "istio", "-f", "testdata/import/clean.yaml")
	if r.code != cli.ExitOK {
		t.Fatalf("import: %v", r)
	}
	m.mustRun(t, r.stdout, "apply", "-f", "-")
	if _, ok := m.get(t, "authz", "shop", "frontend-reads-catalog"); !ok {
		t.Error("shop/frontend-reads-catalog not stored")
	}
	if _, ok := m.get(t, "authz", "trellis-system", "no-debug"); !ok {
		t.Error("the root namespace's DENY is not stored as trellis-system/no-debug")
	}
	if _, spec := m.storedMesh(t); spec.MTLS.Mode != resource.MTLSStrict {
		t.Errorf("mesh mTLS mode %q, want %q", spec.MTLS.Mode, resource.MTLSStrict)
	}
}

func TestImportIstioFlags(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "import", "istio", "-f", "-", "--trust-domain", "example.org", "--istio-trust-domain", "corp.internal")
	if r.code != cli.ExitOK || r.stdout != "# Converted from Istio by trellis import istio -f -\n" {
		t.Errorf("empty stdin: %v, want exit 0 and only the header", r)
	}
	in := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec: {rules: [{from: [{source: {principals: [corp.internal/ns/a/sa/b]}}]}]}\n"
	r = run(t, in, "import", "istio", "-f", "-", "--trust-domain", "example.org", "--istio-trust-domain", "corp.internal")
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "- spiffe://example.org/ns/a/sa/b\n") {
		t.Errorf("trust domains: %v, want the principal in example.org", r)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"import", "istio"}, "error: import istio: -f is required"},
		{[]string{"import", "istio", "-f", "testdata/import/none.yaml"}, "error: import istio: open testdata/import/none.yaml"},
		{[]string{"import", "istio", "-f", "testdata/import/istio.yaml", "--trust-domain", "Bad Domain"}, `error: import istio: --trust-domain "Bad Domain"`},
		{[]string{"import", "istio", "-f", "testdata/syntax-error.yaml"}, "error: import istio: nothing converted: testdata/syntax-error.yaml#"},
	} {
		r := run(t, "", tc.args...)
		if r.code != cli.ExitUser || !strings.HasPrefix(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("trellis %s: %v\nwant exit 1, no output and stderr starting %q", strings.Join(tc.args, " "), r, tc.want)
		}
	}
}

// TestImportIstioMeshTrustDomain: without --trust-domain, principals go
// into the trust domain of the mesh the admin token reaches.
func TestImportIstioMeshTrustDomain(t *testing.T) {
	clearEnv(t)
	cp := cptest.StartControlPlane(t, controlplane.Config{TrustDomain: "example.org"})
	m := &mesh{ControlPlane: cp, client: cp.Client(t)}
	startStuckProxy(t, cp, "catalog-1", "catalog", "shop", "127.0.0.1:1")
	in := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec: {rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]}]}\n"
	r := m.run(t, in, "import", "istio", "-f", "-")
	if r.code != cli.ExitOK || r.stderr != "" || !strings.Contains(r.stdout, "- spiffe://example.org/ns/a/sa/b\n") {
		t.Errorf("%v\nwant the principal in the mesh's trust domain, example.org", r)
	}
	r = m.run(t, in, "import", "istio", "-f", "-", "--trust-domain", "other.org")
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, "- spiffe://other.org/ns/a/sa/b\n") {
		t.Errorf("--trust-domain other.org: %v\nwant the flag to win", r)
	}
	// An unreachable control plane: a note, and the default.
	r = run(t, in, "--api", "http://127.0.0.1:1", "--token", "x", "import", "istio", "-f", "-")
	if r.code != cli.ExitOK || !strings.HasPrefix(r.stderr, "note: using trust domain trellis.local") || !strings.Contains(r.stdout, "spiffe://trellis.local/") {
		t.Errorf("unreachable control plane: %v\nwant a note and trellis.local", r)
	}
}

// TestApplyIstioPointsToImport: trellis apply on Istio YAML says to
// convert it first.
func TestApplyIstioPointsToImport(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "--api", "http://127.0.0.1:1", "--token", "x", "apply", "-f", "testdata/import/istio.yaml")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "trellis import istio -f FILE") {
		t.Errorf("apply on Istio YAML: %v\nwant exit 1 pointing to trellis import istio", r)
	}
}
