package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/resource"
)

// TestApplySequence applies a file, the same file again, then a changed
// copy, against one control plane.
func TestApplySequence(t *testing.T) {
	m := startMesh(t)
	for _, step := range []struct {
		file string
		want string
	}{
		{"testdata/mesh-and-policies.yaml", lines(
			"Mesh/default configured", // the control plane starts with a default Mesh
			"  spec.certificates.workloadTTL: 24h -> 12h",
			"AuthorizationPolicy/shop/frontend-reads-catalog created",
			"AuthorizationPolicy/ops/deny-debug created",
		)},
		{"testdata/mesh-and-policies.yaml", lines(
			"Mesh/default unchanged",
			"AuthorizationPolicy/shop/frontend-reads-catalog unchanged",
			"AuthorizationPolicy/ops/deny-debug unchanged",
		)},
		{"testdata/mesh-and-policies-changed.yaml", lines(
			"Mesh/default unchanged",
			"AuthorizationPolicy/shop/frontend-reads-catalog configured",
			"  spec.rules[0].to[0].methods: [GET] -> [GET, HEAD]",
			"AuthorizationPolicy/ops/deny-debug unchanged",
		)},
	} {
		r := m.run(t, "", "apply", "-f", step.file)
		if r.code != cli.ExitOK || r.stdout != step.want || r.stderr != "" {
			t.Fatalf("apply -f %s: got %v\nwant exit 0, stdout:\n%s", step.file, r, step.want)
		}
	}

	o, ok := m.get(t, "authz", "shop", "frontend-reads-catalog")
	if !ok {
		t.Fatal("frontend-reads-catalog was not stored")
	}
	spec, err := resource.AuthorizationPolicySpecOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := spec.Rules[0].To[0].Methods, []string{"GET", "HEAD"}; !slices.Equal(got, want) {
		t.Errorf("stored methods: got %q, want %q", got, want)
	}
	if got, want := o.Metadata.Generation, int64(2); got != want {
		t.Errorf("generation after one change: got %d, want %d", got, want)
	}
	if _, ms := m.storedMesh(t); ms.Certificates.WorkloadTTL.Duration != 12*time.Hour {
		t.Errorf("stored mesh workloadTTL: got %s, want 12h", ms.Certificates.WorkloadTTL)
	}
}

// TestApplySources reads the same kind of content from a file, several
// files, a directory and stdin.
func TestApplySources(t *testing.T) {
	policy := func(name, ns string) string {
		return "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n" +
			"metadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  rules:\n  - to: [{methods: [GET]}]\n"
	}
	for _, tc := range []struct {
		name      string
		args      []string
		stdin     string
		want      string
		wantAuthz int
	}{
		{
			name: "file",
			args: []string{"-f", "testdata/mesh-and-policies.yaml"},
			want: lines(
				"Mesh/default configured",
				"  spec.certificates.workloadTTL: 24h -> 12h",
				"AuthorizationPolicy/shop/frontend-reads-catalog created",
				"AuthorizationPolicy/ops/deny-debug created",
			),
			wantAuthz: 2,
		},
		{
			name: "repeated -f",
			args: []string{"-f", "testdata/labels-policy.yaml", "-f", "testdata/mesh-and-policies.yaml"},
			want: lines(
				"AuthorizationPolicy/shop/monitoring-scrapes created",
				"Mesh/default configured",
				"  spec.certificates.workloadTTL: 24h -> 12h",
				"AuthorizationPolicy/shop/frontend-reads-catalog created",
				"AuthorizationPolicy/ops/deny-debug created",
			),
			wantAuthz: 3,
		},
		{
			// Files in name order; README.md is not a resource file.
			name: "directory",
			args: []string{"-f", "testdata/applydir"},
			want: lines(
				"Mesh/default configured",
				"  spec.mtls.mode: STRICT -> PERMISSIVE",
				"AuthorizationPolicy/shop/frontend-reads-catalog created",
				"AuthorizationPolicy/ops/deny-debug created",
			),
			wantAuthz: 2,
		},
		{
			name:  "stdin yaml",
			args:  []string{"-f", "-"},
			stdin: policy("a", "shop") + "---\n" + policy("b", "web"),
			want: lines(
				"AuthorizationPolicy/shop/a created",
				"AuthorizationPolicy/web/b created",
			),
			wantAuthz: 2,
		},
		{
			name: "stdin json list without namespace",
			args: []string{"-f", "-"},
			stdin: `{"apiVersion": "v1", "kind": "List", "items": [` +
				`{"apiVersion": "trellis.dev/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": "c"}}]}`,
			want:      lines("AuthorizationPolicy/default/c created"),
			wantAuthz: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMesh(t)
			r := m.run(t, tc.stdin, append([]string{"apply"}, tc.args...)...)
			if r.code != cli.ExitOK || r.stdout != tc.want {
				t.Fatalf("got %v\nwant exit 0, stdout:\n%s", r, tc.want)
			}
			if got := len(m.list(t, "authz")); got != tc.wantAuthz {
				t.Errorf("stored policies: got %d, want %d", got, tc.wantAuthz)
			}
		})
	}
}

func TestApplyDryRunStoresNothing(t *testing.T) {
	m := startMesh(t)
	before, _ := m.storedMesh(t)

	r := m.run(t, "", "apply", "--dry-run", "-f", "testdata/mesh-and-policies.yaml")
	want := lines(
		"Mesh/default configured (dry run)",
		"  spec.certificates.workloadTTL: 24h -> 12h",
		"AuthorizationPolicy/shop/frontend-reads-catalog created (dry run)",
		"AuthorizationPolicy/ops/deny-debug created (dry run)",
	)
	if r.code != cli.ExitOK || r.stdout != want {
		t.Fatalf("got %v\nwant exit 0, stdout:\n%s", r, want)
	}
	if got := m.list(t, "authz"); len(got) != 0 {
		t.Errorf("dry run stored %d policies, want none", len(got))
	}
	after, _ := m.storedMesh(t)
	if !sameObjects(t, after, before) {
		t.Errorf("dry run changed the Mesh:\ngot  %+v\nwant %+v", after, before)
	}

	// A dry run against stored objects reports changes without making them.
	m.mustApply(t, "testdata/mesh-and-policies.yaml")
	stored := m.list(t, "authz")
	r = m.run(t, "", "apply", "-f", "testdata/mesh-and-policies-changed.yaml", "--dry-run")
	want = lines(
		"Mesh/default unchanged (dry run)",
		"AuthorizationPolicy/shop/frontend-reads-catalog configured (dry run)",
		"  spec.rules[0].to[0].methods: [GET] -> [GET, HEAD]",
		"AuthorizationPolicy/ops/deny-debug unchanged (dry run)",
	)
	if r.code != cli.ExitOK || r.stdout != want {
		t.Fatalf("got %v\nwant exit 0, stdout:\n%s", r, want)
	}
	if got := m.list(t, "authz"); !sameObjects(t, got, stored) {
		t.Errorf("dry run changed stored policies:\ngot  %+v\nwant %+v", got, stored)
	}
}

// TestApplyErrors checks that bad input exits 1 with a message that says
// what to fix, and that nothing at all is stored.
func TestApplyErrors(t *testing.T) {
	emptyDir := t.TempDir()
	if err := os.WriteFile(emptyDir+"/notes.txt", []byte("no resources here"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantStderr []string
	}{
		{
			name: "invalid method among good documents",
			args: []string{"-f", "testdata/invalid-method.yaml"},
			wantStderr: []string{
				"nothing was applied",
				`testdata/invalid-method.yaml#3: AuthorizationPolicy shop/bad-methods: spec.rules[0].to[0].methods[0]: "GTE" is not an HTTP method`,
			},
		},
		{
			name: "invalid document in a later file",
			args: []string{"-f", "testdata/mesh-and-policies.yaml", "-f", "testdata/invalid-method.yaml"},
			wantStderr: []string{
				`testdata/invalid-method.yaml#3: AuthorizationPolicy shop/bad-methods: spec.rules[0].to[0].methods[0]: "GTE" is not an HTTP method`,
			},
		},
		{
			name:       "invalid document on stdin",
			args:       []string{"-f", "-"},
			stdin:      "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: strikt}}\n",
			wantStderr: []string{`<stdin>#1: Mesh default: spec.mtls.mode: must be one of STRICT, PERMISSIVE (in any case), got "strikt"`},
		},
		{
			name: "unknown kind",
			args: []string{"-f", "testdata/unknown-kind.yaml"},
			wantStderr: []string{
				`testdata/unknown-kind.yaml#2: Gateway edge: kind: unknown kind "Gateway"`,
				"known kinds: Mesh, AuthorizationPolicy",
			},
		},
		{
			name:       "kind in lower case",
			args:       []string{"-f", "-"},
			stdin:      "apiVersion: trellis.dev/v1alpha1\nkind: mesh\nmetadata: {name: default}\n",
			wantStderr: []string{`<stdin>#1: mesh default: kind: unknown kind "mesh" (did you mean "Mesh"?)`},
		},
		{
			name:       "missing file",
			args:       []string{"-f", "testdata/no-such-file.yaml"},
			wantStderr: []string{"testdata/no-such-file.yaml", "no such file or directory"},
		},
		{
			name:       "yaml syntax error",
			args:       []string{"-f", "testdata/syntax-error.yaml"},
			wantStderr: []string{"testdata/syntax-error.yaml#2: invalid YAML: line 7:"},
		},
		{
			name: "unknown field typo",
			args: []string{"-f", "testdata/typo.yaml"},
			wantStderr: []string{
				`testdata/typo.yaml#1: AuthorizationPolicy shop/frontend-reads-catalog: spec.rules[0].from[0].princpals: unknown field (did you mean "principals"?)`,
			},
		},
		{
			name:       "unknown envelope field",
			args:       []string{"-f", "-"},
			stdin:      "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetdata: {name: default}\n",
			wantStderr: []string{`<stdin>#1: Mesh <unnamed>: metdata: unknown field (did you mean "metadata"?)`},
		},
		{
			name:       "wrong apiVersion",
			args:       []string{"-f", "-"},
			stdin:      "apiVersion: v1\nkind: Mesh\nmetadata: {name: default}\n",
			wantStderr: []string{`<stdin>#1: Mesh default: apiVersion: must be "trellis.dev/v1alpha1", got "v1"`},
		},
		{
			name:       "empty stdin",
			args:       []string{"-f", "-"},
			wantStderr: []string{"no resources found in -"},
		},
		{
			name:       "directory without resource files",
			args:       []string{"-f", emptyDir},
			wantStderr: []string{"directory " + emptyDir + " has no .yaml, .yml or .json files"},
		},
		{
			name:       "no -f",
			args:       nil,
			wantStderr: []string{"-f is required"},
		},
		{
			name:       "positional argument",
			args:       []string{"testdata/typo.yaml"},
			wantStderr: []string{`trellis apply takes no arguments, got ["testdata/typo.yaml"]`},
		},
		{
			// Valid locally; the server refuses it (409) as a whole.
			name:       "same resource twice",
			args:       []string{"-f", "testdata/duplicate.yaml"},
			wantStderr: []string{"AuthorizationPolicy shop/twice", "appears twice in one apply"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMesh(t)
			meshBefore, _ := m.storedMesh(t)
			r := m.run(t, tc.stdin, append([]string{"apply"}, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" {
				t.Errorf("got %v\nwant exit %d and no stdout", r, cli.ExitUser)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, want)
				}
			}
			if got := m.list(t, "authz"); len(got) != 0 {
				t.Errorf("a failed apply stored %d policies, want none", len(got))
			}
			if meshAfter, _ := m.storedMesh(t); !sameObjects(t, meshAfter, meshBefore) {
				t.Errorf("a failed apply changed the Mesh:\ngot  %+v\nwant %+v", meshAfter, meshBefore)
			}
		})
	}
}

// TestApplyEnumCase applies enum values in other cases than their canonical
// one: they are stored and printed canonically, and the canonical spelling
// of the same file is no change.
func TestApplyEnumCase(t *testing.T) {
	m := startMesh(t)
	doc := func(mtls, def, action, enforcement string) string {
		return "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n" +
			"spec: {mtls: {mode: " + mtls + "}, authorization: {default: " + def + "}}\n---\n" +
			"apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n" +
			"spec: {action: " + action + ", enforcement: " + enforcement + ", rules: [{}]}\n"
	}
	m.mustRun(t, doc("permissive", "Deny", "deny", "AUDIT"), "apply", "-f", "-")

	_, ms := m.storedMesh(t)
	o, _ := m.get(t, "authz", "shop", "p")
	ps, err := resource.AuthorizationPolicySpecOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, got, want string }{
		{"spec.mtls.mode", ms.MTLS.Mode, "PERMISSIVE"},
		{"spec.authorization.default", ms.Authorization.Default, "deny"},
		{"spec.action", ps.Action, "DENY"},
		{"spec.enforcement", ps.Enforcement, "audit"},
	} {
		if c.got != c.want {
			t.Errorf("stored %s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if out := m.mustRun(t, "", "get", "authz", "p", "-n", "shop", "-o", "yaml"); !strings.Contains(out, "action: DENY\n") || !strings.Contains(out, "enforcement: audit\n") {
		t.Errorf("get -o yaml:\n%s\nwant action: DENY and enforcement: audit", out)
	}

	r := m.run(t, doc("PERMISSIVE", "deny", "DENY", "audit"), "apply", "-f", "-")
	if want := lines("Mesh/default unchanged", "AuthorizationPolicy/shop/p unchanged"); r.code != cli.ExitOK || r.stdout != want {
		t.Errorf("canonical spelling of the same file: got %v\nwant exit 0, stdout:\n%s", r, want)
	}
}

// TestApplyChanges applies a sequence of changes to one control plane and
// checks the field diff under each object and the warnings about Mesh
// security settings, also those a field left out of the file changes.
func TestApplyChanges(t *testing.T) {
	m := startMesh(t)
	const meshHead = "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n"
	const policyHead = "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop"
	ttlOnly := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(ttlOnly, []byte(meshHead+"spec: {certificates: {workloadTTL: 12h}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name       string
		args       []string
		stdin      string
		wantStdout string
		wantStderr string
	}{
		{
			name:  "every security setting set in the file, in any case",
			args:  []string{"-f", "-"},
			stdin: meshHead + "spec: {mtls: {mode: permissive}, authorization: {default: Allow}, outbound: {mode: BLOCK}, certificates: {workloadTTL: 12h}, http: {pathNormalization: decodeslashes}}\n",
			wantStdout: lines(
				"Mesh/default configured",
				"  spec.mtls.mode: STRICT -> PERMISSIVE",
				"  spec.authorization.default: deny -> allow",
				"  spec.certificates.workloadTTL: 24h -> 12h",
				"  spec.outbound.mode: passthrough -> block",
				"  spec.http.pathNormalization: strict -> decodeSlashes",
			),
			wantStderr: lines(
				"warning: Mesh default: security setting spec.mtls.mode: STRICT -> PERMISSIVE: proxies also accept plain text, with no caller identity",
				"warning: Mesh default: security setting spec.authorization.default: deny -> allow: a workload no ALLOW policy selects accepts every call",
				"warning: Mesh default: security setting spec.outbound.mode: passthrough -> block: transparent proxies refuse captured non-mesh traffic",
				"warning: Mesh default: security setting spec.http.pathNormalization: strict -> decodeSlashes: proxies turn slashes and backslashes, raw or encoded, into '/'",
			),
		},
		{
			name: "security settings left out of the file take their defaults",
			args: []string{"-f", ttlOnly},
			wantStdout: lines(
				"Mesh/default configured",
				"  spec.mtls.mode: PERMISSIVE -> STRICT",
				"  spec.authorization.default: allow -> deny",
				"  spec.outbound.mode: block -> passthrough",
				"  spec.http.pathNormalization: decodeSlashes -> strict",
			),
			wantStderr: lines(
				"warning: Mesh default: security setting spec.mtls.mode: PERMISSIVE -> STRICT ("+ttlOnly+"#1 leaves it out, so the default applies): proxies accept only mutual TLS",
				"warning: Mesh default: security setting spec.authorization.default: allow -> deny ("+ttlOnly+"#1 leaves it out, so the default applies): a call no ALLOW policy covers is denied",
				"warning: Mesh default: security setting spec.outbound.mode: block -> passthrough ("+ttlOnly+"#1 leaves it out, so the default applies): transparent proxies let captured non-mesh traffic out to its destination",
				"warning: Mesh default: security setting spec.http.pathNormalization: decodeSlashes -> strict ("+ttlOnly+"#1 leaves it out, so the default applies): proxies refuse paths an app might route differently from the policy that matched them",
			),
		},
		{
			name:  "other mesh fields and a new policy: no warning",
			args:  []string{"-f", "-"},
			stdin: meshHead + "spec: {authorization: {hidePolicy: true}}\n---\n" + policyHead + "}\nspec: {rules: [{to: [{methods: [GET]}]}]}\n",
			wantStdout: lines(
				"Mesh/default configured",
				"  spec.authorization.hidePolicy: false -> true",
				"  spec.certificates.workloadTTL: 12h -> 24h",
				"AuthorizationPolicy/shop/p created",
			),
		},
		{
			name:  "policy labels, action and a new rule",
			args:  []string{"-f", "-"},
			stdin: policyHead + ", labels: {team: shop}}\nspec: {action: deny, rules: [{to: [{methods: [GET]}]}, {to: [{paths: [/admin/*]}]}]}\n",
			wantStdout: lines(
				"AuthorizationPolicy/shop/p configured",
				"  metadata.labels[team]: <none> -> shop",
				"  spec.action: ALLOW -> DENY",
				"  spec.rules[1]: <none> -> {to: [{paths: [/admin/*]}]}",
			),
		},
		{
			name:  "a rule removed, in a dry run",
			args:  []string{"-f", "-", "--dry-run"},
			stdin: policyHead + ", labels: {team: shop}}\nspec: {action: DENY, rules: [{to: [{methods: [GET]}]}]}\n",
			wantStdout: lines(
				"AuthorizationPolicy/shop/p configured (dry run)",
				"  spec.rules[1]: {to: [{paths: [/admin/*]}]} -> <none>",
			),
		},
	} {
		r := m.run(t, step.stdin, append([]string{"apply"}, step.args...)...)
		if r.code != cli.ExitOK || r.stdout != step.wantStdout || r.stderr != step.wantStderr {
			t.Errorf("%s: got %v\nwant exit 0, stdout:\n%s\nstderr:\n%s", step.name, r, step.wantStdout, step.wantStderr)
		}
	}
}
