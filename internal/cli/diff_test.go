package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// TestDiff compares files with what a control plane holds: nothing is
// stored, and the field lines are the ones apply then prints.
func TestDiff(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/mesh-and-policies.yaml")
	meshBefore, _ := m.storedMesh(t)
	policiesBefore := m.list(t, "authz")

	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:     "no differences",
			args:     []string{"-f", "testdata/mesh-and-policies.yaml"},
			wantCode: cli.ExitOK,
		},
		{
			name:     "a changed field",
			args:     []string{"-f", "testdata/mesh-and-policies-changed.yaml"},
			wantCode: cli.ExitDifferent,
			wantStdout: lines(
				"AuthorizationPolicy/shop/frontend-reads-catalog would be configured",
				"  spec.rules[0].to[0].methods: [GET] -> [GET, HEAD]",
			),
		},
		{
			name:       "a new object",
			args:       []string{"-f", "testdata/labels-policy.yaml", "-f", "testdata/mesh-and-policies.yaml"},
			wantCode:   cli.ExitDifferent,
			wantStdout: lines("AuthorizationPolicy/shop/monitoring-scrapes would be created"),
		},
		{
			name:     "a security setting, and a field left out",
			args:     []string{"-f", "-"},
			stdin:    "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: Permissive}}\n",
			wantCode: cli.ExitDifferent,
			wantStdout: lines(
				"Mesh/default would be configured",
				"  spec.mtls.mode: STRICT -> PERMISSIVE",
				"  spec.certificates.workloadTTL: 12h -> 24h",
			),
			wantStderr: lines("warning: Mesh default: security setting spec.mtls.mode: STRICT -> PERMISSIVE: proxies also accept plain text, with no caller identity"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := m.run(t, tc.stdin, append([]string{"diff"}, tc.args...)...)
			if r.code != tc.wantCode || r.stdout != tc.wantStdout || r.stderr != tc.wantStderr {
				t.Errorf("got %v\nwant exit %d, stdout:\n%s\nstderr:\n%s", r, tc.wantCode, tc.wantStdout, tc.wantStderr)
			}
		})
	}

	if meshAfter, _ := m.storedMesh(t); !sameObjects(t, meshAfter, meshBefore) {
		t.Errorf("diff changed the Mesh:\ngot  %+v\nwant %+v", meshAfter, meshBefore)
	}
	if got := m.list(t, "authz"); !sameObjects(t, got, policiesBefore) {
		t.Errorf("diff changed the policies:\ngot  %+v\nwant %+v", got, policiesBefore)
	}

	diff := m.run(t, "", "diff", "-f", "testdata/mesh-and-policies-changed.yaml")
	applied := m.mustRun(t, "", "apply", "-f", "testdata/mesh-and-policies-changed.yaml")
	if got, want := fieldLines(applied), fieldLines(diff.stdout); got != want || got == "" {
		t.Errorf("apply after diff printed field lines\n%s\nwant the diff's\n%s", got, want)
	}
	if r := m.run(t, "", "diff", "-f", "testdata/mesh-and-policies-changed.yaml"); r.code != cli.ExitOK || r.stdout != "" {
		t.Errorf("diff after apply: got %v\nwant exit 0 and no output", r)
	}
}

// fieldLines keeps the indented field lines of apply or diff output.
func fieldLines(out string) string {
	var keep []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "  ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// TestDiffErrors checks that every error exits with more than 1 (1 means
// "differences", as with kubectl diff), with the message apply would give.
func TestDiffErrors(t *testing.T) {
	m := startMesh(t)
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantStderr []string
	}{
		{
			name: "invalid document",
			args: []string{"-f", "testdata/invalid-method.yaml"},
			wantStderr: []string{
				"diff: nothing was compared",
				`testdata/invalid-method.yaml#3: AuthorizationPolicy shop/bad-methods: spec.rules[0].to[0].methods[0]: "GTE" is not an HTTP method`,
			},
		},
		{
			name:       "bad enum value",
			args:       []string{"-f", "-"},
			stdin:      "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {outbound: {mode: drop}}\n",
			wantStderr: []string{`<stdin>#1: Mesh default: spec.outbound.mode: must be one of passthrough, block (in any case), got "drop"`},
		},
		{
			name:       "unknown field",
			args:       []string{"-f", "testdata/typo.yaml"},
			wantStderr: []string{`spec.rules[0].from[0].princpals: unknown field (did you mean "principals"?)`},
		},
		{
			name:       "missing file",
			args:       []string{"-f", "testdata/no-such-file.yaml"},
			wantStderr: []string{"diff: stat testdata/no-such-file.yaml: no such file or directory"},
		},
		{
			name:       "no -f",
			wantStderr: []string{"diff: -f is required"},
		},
		{
			name:       "unknown flag",
			args:       []string{"--dry-run"},
			wantStderr: []string{"unknown flag: --dry-run (see trellis diff --help)"},
		},
		{
			name:       "positional argument",
			args:       []string{"testdata/typo.yaml"},
			wantStderr: []string{`trellis diff takes no arguments, got ["testdata/typo.yaml"]`},
		},
		{
			name:       "refused by the control plane",
			args:       []string{"-f", "testdata/duplicate.yaml"},
			wantStderr: []string{"diff: apply: nothing was applied", "AuthorizationPolicy shop/twice", "appears twice in one apply"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := m.run(t, tc.stdin, append([]string{"diff"}, tc.args...)...)
			if r.code != cli.ExitInternal || r.stdout != "" {
				t.Errorf("got %v\nwant exit %d and no stdout", r, cli.ExitInternal)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, want)
				}
			}
		})
	}

	t.Run("control plane unreachable", func(t *testing.T) {
		r := run(t, "", "--api", "http://127.0.0.1:1", "--token", "x", "diff", "-f", "testdata/mesh-and-policies.yaml")
		if r.code != cli.ExitInternal || !strings.Contains(r.stderr, "control plane unreachable") {
			t.Errorf("got %v\nwant exit %d, control plane unreachable", r, cli.ExitInternal)
		}
	})
}
