package cli_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/testutil"
)

// finding is one entry of `policy lint -o json`, without the message.
type finding struct {
	Kind        string `json:"kind"`
	Policy      string `json:"policy"`
	Rule        int    `json:"rule"`
	OtherPolicy string `json:"otherPolicy"`
	OtherRule   int    `json:"otherRule"`
}

func lintJSON(t *testing.T, r result) []finding {
	t.Helper()
	var got []finding
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v in %v", err, r)
	}
	return got
}

// The findings of testdata/policy/lint-findings.yaml.
var (
	adminToolsDenied = finding{"allow-denied", "shop/admin-tools", 0, "shop/deny-admin", 0}
	readersShadowed  = finding{"shadowed", "shop/catalog-readers", 1, "shop/shop-to-catalog", 0}
)

func TestPolicyLintLive(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/lint-findings.yaml")

	r := m.run(t, "", "policy", "lint")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "policy lint: 2 findings") {
		t.Fatalf("got %v, want exit 1 for 2 findings", r)
	}
	testutil.Golden(t, "policy-lint-findings.golden", r.stdout)

	r = m.run(t, "", "policy", "lint", "-o", "json")
	if got, want := lintJSON(t, r), []finding{adminToolsDenied, readersShadowed}; r.code != cli.ExitUser || !reflect.DeepEqual(got, want) {
		t.Errorf("got exit %d findings %+v, want exit 1 findings %+v", r.code, got, want)
	}
}

func TestPolicyLintClean(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/lint-clean.yaml")
	if got, want := m.mustRun(t, "", "policy", "lint"), "no findings in 2 policies\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := m.mustRun(t, "", "policy", "lint", "-o", "json"), "[]\n"; got != want {
		t.Errorf("-o json: got %q, want %q", got, want)
	}
}

func TestPolicyLintFilesInLiveContext(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/lint-clean.yaml")
	shadowedByLive := finding{"shadowed", "shop/catalog-readers", 0, "shop/shop-to-catalog", 0}

	// The file's rule is covered by a live policy.
	r := m.run(t, "", "policy", "lint", "-f", "testdata/policy/lint-narrow.yaml", "-o", "json")
	if got, want := lintJSON(t, r), []finding{shadowedByLive}; r.code != cli.ExitUser || !reflect.DeepEqual(got, want) {
		t.Errorf("got exit %d findings %+v, want exit 1 findings %+v", r.code, got, want)
	}
	r = m.run(t, "", "policy", "lint", "-f", "testdata/policy/lint-narrow.yaml")
	if want := "1 finding in 3 policies (1 from files, 2 live)\n"; r.code != cli.ExitUser || !strings.HasSuffix(r.stdout, want) {
		t.Errorf("got %v, want exit 1 and summary %q", r, want)
	}

	// Alone, the file is clean.
	if got, want := m.mustRun(t, "", "policy", "lint", "-f", "testdata/policy/lint-narrow.yaml", "--local"), "no findings in 1 policy (the files alone)\n"; got != want {
		t.Errorf("--local: got %q, want %q", got, want)
	}

	// A file policy replaces the live one of the same name.
	if got, want := m.mustRun(t, "", "policy", "lint", "-f", "testdata/policy/lint-override.yaml"), "no findings in 3 policies (2 from files, 1 live)\n"; got != want {
		t.Errorf("override: got %q, want %q", got, want)
	}

	// Findings among live policies alone are not the file's business.
	m.mustApply(t, "testdata/policy/lint-findings.yaml")
	got := m.mustRun(t, "", "policy", "lint", "-f", "testdata/policy/check-audit-allowed.yaml")
	if want := "no findings in 5 policies (1 from files, 4 live); 2 findings among live policies alone not shown (trellis policy lint shows them)\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPolicyLintFileTakesPartInLiveFinding(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/lint-findings.yaml")
	// The files' shop-to-catalog and deny-admin are the broader rules of
	// live findings, which are therefore shown. Files may come on stdin.
	stdin, err := os.ReadFile("testdata/policy/lint-clean.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := m.run(t, string(stdin), "policy", "lint", "-f", "-", "-o", "json")
	if got, want := lintJSON(t, r), []finding{adminToolsDenied, readersShadowed}; r.code != cli.ExitUser || !reflect.DeepEqual(got, want) {
		t.Errorf("got exit %d findings %+v, want exit 1 findings %+v", r.code, got, want)
	}
}

func TestPolicyLintOffline(t *testing.T) {
	clearEnv(t)
	// No token configured: the files are linted alone.
	r := run(t, "", "policy", "lint", "-f", "testdata/policy/lint-foreign.yaml", "-o", "json")
	want := []finding{{"foreign-principal", "shop/partner", 0, "", -1}}
	if got := lintJSON(t, r); r.code != cli.ExitUser || !reflect.DeepEqual(got, want) || !strings.Contains(r.stderr, "note: no admin token configured; linting the files alone") {
		t.Errorf("got %v, want exit 1 with %+v and a note", r, want)
	}
	// A federated trust domain named with --trust-domain is not foreign.
	r = run(t, "", "policy", "lint", "-f", "testdata/policy/lint-foreign.yaml", "--trust-domain", "partner.example")
	if r.code != cli.ExitOK {
		t.Errorf("--trust-domain partner.example: got %v, want exit 0", r)
	}
	// Unreachable: the files are linted alone; without files, exit 2.
	api := closedAPI(t)
	r = run(t, "", "--api", api, "--token", "x", "policy", "lint", "-f", "testdata/policy/lint-clean.yaml")
	if r.code != cli.ExitOK || r.stdout != "no findings in 2 policies (the files alone)\n" || !strings.Contains(r.stderr, "note: linting the files alone: control plane unreachable") {
		t.Errorf("unreachable with -f: got %v, want exit 0 linting the files alone", r)
	}
	r = run(t, "", "--api", api, "--token", "x", "policy", "lint")
	if r.code != cli.ExitInternal || !strings.Contains(r.stderr, "control plane unreachable") {
		t.Errorf("unreachable without -f: got %v, want exit 2", r)
	}
}

func TestPolicyLintBadInput(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", "testdata/invalid-method.yaml"}, "policy lint: the files are not valid"},
		{[]string{"-f", "testdata/policy/missing.yaml"}, "policy lint: stat testdata/policy/missing.yaml"},
		{[]string{"-f", "-"}, "policy lint: no resources found in -"},
		{[]string{"--local"}, "--local lints files: add -f FILE"},
		{[]string{"-o", "yaml"}, `-o "yaml": use text or json`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, "", append([]string{"policy", "lint"}, tc.args...)...)
			if r.code != cli.ExitUser || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("got %v\nwant exit 1 and stderr containing %q", r, tc.want)
			}
		})
	}
}

func TestPolicyLintWithProxies(t *testing.T) {
	m := startMeshWithProxies(t)
	m.mustApply(t, "testdata/policy/check-labels.yaml")
	// Registered workloads make selectors checkable, and the proxies
	// give the trust domain: trellis.local principals are foreign here.
	if got, want := m.mustRun(t, "", "policy", "lint"), "no findings in 1 policy\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r := m.run(t, "", "policy", "lint", "-f", "testdata/policy/lint-ghosts.yaml", "-o", "json")
	want := []finding{
		{"no-workload", "shop/frontend-to-ghost", -1, "", -1},
		{"foreign-principal", "shop/frontend-to-ghost", 0, "", -1},
		{"no-workload", "shop/old-catalog", -1, "", -1},
	}
	if got := lintJSON(t, r); r.code != cli.ExitUser || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant exit 1 findings %+v", r, want)
	}
}
