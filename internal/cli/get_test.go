package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
)

// startMeshWithPolicies starts a control plane holding the Mesh and policies
// of testdata: shop/frontend-reads-catalog, shop/monitoring-scrapes and
// ops/deny-debug.
func startMeshWithPolicies(t *testing.T) *mesh {
	t.Helper()
	m := startMesh(t)
	m.mustApply(t, "testdata/mesh-and-policies.yaml", "testdata/labels-policy.yaml")
	return m
}

func TestGetTable(t *testing.T) {
	m := startMeshWithPolicies(t)
	for _, tc := range []struct {
		args   []string
		golden string
	}{
		{[]string{"authz", "-n", "shop"}, "get-authz-shop.golden"},
		{[]string{"authorizationpolicies", "--namespace", "shop"}, "get-authz-shop.golden"},
		{[]string{"authz", "-A"}, "get-authz-all.golden"},
		{[]string{"ap", "--all-namespaces"}, "get-authz-all.golden"},
		{[]string{"authorizationpolicy", "frontend-reads-catalog", "-n", "shop"}, "get-authz-one.golden"},
		{[]string{"AuthorizationPolicy", "deny-debug", "-n", "ops"}, "get-authz-ops-one.golden"},
		{[]string{"mesh"}, "get-mesh.golden"},
		{[]string{"meshes", "default", "-o", "table"}, "get-mesh-one.golden"},
		// A cluster-scoped kind ignores -n and -A.
		{[]string{"mesh", "-A"}, "get-mesh.golden"},
		{[]string{"meshes", "-n", "shop"}, "get-mesh.golden"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"get"}, tc.args...)...)
			if r.code != cli.ExitOK || r.stderr != "" {
				t.Fatalf("got %v\nwant exit 0 and no stderr", r)
			}
			testutil.Golden(t, tc.golden, normalizeAge(r.stdout))
		})
	}
}

func TestGetEmptyList(t *testing.T) {
	m := startMeshWithPolicies(t)
	for _, tc := range []struct {
		args       []string
		wantStdout string
		wantStderr string
	}{
		{[]string{"authz", "-n", "nowhere"}, "", "No authorizationpolicies found in namespace nowhere.\n"},
		{[]string{"authz"}, "", "No authorizationpolicies found in namespace default.\n"},
		{[]string{"authz", "-n", "nowhere", "-o", "json"}, "{\n  \"apiVersion\": \"trellis.dev/v1alpha1\",\n  \"items\": [],\n  \"kind\": \"List\"\n}\n", ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"get"}, tc.args...)...)
			if r.code != cli.ExitOK || r.stdout != tc.wantStdout || r.stderr != tc.wantStderr {
				t.Errorf("got %v\nwant exit 0, stdout %q, stderr %q", r, tc.wantStdout, tc.wantStderr)
			}
		})
	}
}

// TestGetStructuredOutput parses -o json and -o yaml back and compares them
// with what the admin API returns.
func TestGetStructuredOutput(t *testing.T) {
	m := startMeshWithPolicies(t)
	all := m.list(t, "authz")
	if len(all) != 3 {
		t.Fatalf("stored policies: got %d, want 3", len(all))
	}
	var shop []resource.Object
	for _, o := range all {
		if o.Metadata.Namespace == "shop" {
			shop = append(shop, o)
		}
	}
	one, _ := m.get(t, "authz", "shop", "frontend-reads-catalog")
	meshObj, _ := m.storedMesh(t)

	unmarshal := map[string]func([]byte, any) error{
		"json": json.Unmarshal,
		"yaml": func(data []byte, v any) error { return yaml.UnmarshalStrict(data, v) },
	}
	type list struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []resource.Object `json:"items"`
	}
	for _, format := range []string{"json", "yaml"} {
		for _, tc := range []struct {
			args []string
			want any
		}{
			{[]string{"authz", "-A"}, list{resource.APIVersion, "List", all}},
			{[]string{"authz", "-n", "shop"}, list{resource.APIVersion, "List", shop}},
			{[]string{"authz", "frontend-reads-catalog", "-n", "shop"}, one},
			{[]string{"mesh", "default"}, meshObj},
			{[]string{"mesh"}, list{resource.APIVersion, "List", []resource.Object{meshObj}}},
		} {
			t.Run(format+" "+strings.Join(tc.args, " "), func(t *testing.T) {
				r := m.run(t, "", append([]string{"get", "-o", format}, tc.args...)...)
				if r.code != cli.ExitOK {
					t.Fatalf("got %v, want exit 0", r)
				}
				var got any
				switch tc.want.(type) {
				case list:
					var l list
					err := unmarshal[format]([]byte(r.stdout), &l)
					if err != nil {
						t.Fatalf("parse output: %v\n%s", err, r.stdout)
					}
					got = l
				default:
					var o resource.Object
					if err := unmarshal[format]([]byte(r.stdout), &o); err != nil {
						t.Fatalf("parse output: %v\n%s", err, r.stdout)
					}
					got = o
				}
				if !sameObjects(t, got, tc.want) {
					t.Errorf("parsed output:\n%s\nwant the objects the API returns:\n%+v", r.stdout, tc.want)
				}
			})
		}
	}
}

func TestGetErrors(t *testing.T) {
	m := startMeshWithPolicies(t)
	for _, tc := range []struct {
		args       []string
		wantStderr []string
	}{
		{[]string{"authz", "nope", "-n", "shop"}, []string{"not found: AuthorizationPolicy shop/nope"}},
		// frontend-reads-catalog is in shop, not in the default namespace.
		{[]string{"authz", "frontend-reads-catalog"}, []string{"not found: AuthorizationPolicy default/frontend-reads-catalog"}},
		{[]string{"mesh", "other"}, []string{"not found: Mesh other"}},
		{[]string{"authz", "-o", "xml"}, []string{`-o "xml": use table, yaml or json`}},
		{[]string{"mesh", "-o", "wide"}, []string{`-o "wide": use table, yaml or json`}},
		{[]string{"gateways"}, []string{`unknown kind "gateways"`, "known kinds: meshes, authorizationpolicies"}},
		{nil, []string{"want KIND [NAME]", "known kinds: meshes, authorizationpolicies"}},
		{[]string{"authz", "a", "b"}, []string{"want KIND [NAME]"}},
		{[]string{"authz", "-A", "-n", "shop"}, []string{"-n and -A exclude each other"}},
		{[]string{"authz", "deny-debug", "-A"}, []string{"-A lists; drop NAME or -A"}},
		{[]string{"authz", "--output"}, []string{"flag needs an argument", "trellis get --help"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"get"}, tc.args...)...)
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
}
