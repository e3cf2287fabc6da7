package install_test

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
	"github.com/trellismesh/trellis/internal/version"
)

// chartDir is deploy/helm/trellis, from this package's directory.
var chartDir = filepath.Join("..", "..", "..", "deploy", "helm", "trellis")

// regenerate is the command that rewrites the chart's CRDs from the Go
// types.
const regenerate = "go test ./internal/kube/install -run TestHelmCRDs -update"

// The chart renders the objects of trellis install kubernetes: for the
// options TestManifests uses (so also its golden file), for the chart's
// defaults against the command's defaults, and for other values. Both
// sides go through the Go API types before they are compared (see
// canonical), so a field the chart misspells fails the test too.
func TestHelm(t *testing.T) {
	helm := kubetest.Helm(t)
	cases := []struct {
		name string
		set  []string // helm template --set
		ns   string   // helm template --namespace
		want install.Options
	}{{
		name: "TestManifests' options",
		set:  []string{"image=" + opts.Image, "proxyImage=" + opts.ProxyImage, "trustDomain="},
		want: opts,
	}, {
		name: "defaults",
		want: install.Options{
			Image:       "ghcr.io/trellismesh/trellis:" + version.Version,
			ProxyImage:  "ghcr.io/trellismesh/trellis-proxy:" + version.Version,
			Replicas:    2,
			TrustDomain: identity.DefaultTrustDomain,
		},
	}, {
		name: "other values",
		set:  []string{"image=registry.example/mesh/control:1.2.3", "proxyImage=registry.example/mesh/proxy@sha256:0123abcd", "replicas=3", "trustDomain=prod.example.org"},
		want: install.Options{Image: "registry.example/mesh/control:1.2.3", ProxyImage: "registry.example/mesh/proxy@sha256:0123abcd", Replicas: 3, TrustDomain: "prod.example.org"},
	}, {
		name: "another release namespace",
		ns:   "default",
		set:  []string{"replicas=1"},
		want: install.Options{
			Image:       "ghcr.io/trellismesh/trellis:" + version.Version,
			ProxyImage:  "ghcr.io/trellismesh/trellis-proxy:" + version.Version,
			Replicas:    1,
			TrustDomain: identity.DefaultTrustDomain,
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := install.Objects(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			y, err := install.YAML(objs)
			if err != nil {
				t.Fatal(err)
			}
			want := parseObjects(t, "install", y)
			got := parseObjects(t, "chart", helmTemplate(t, helm, tc.ns, tc.set...))
			compareObjects(t, got, want)
		})
	}
}

// With createNamespace=false (the namespace made by helm install
// --create-namespace, or beforehand) the chart renders everything but the
// Namespace.
func TestHelmWithoutNamespace(t *testing.T) {
	helm := kubetest.Helm(t)
	objs, err := install.Objects(opts)
	if err != nil {
		t.Fatal(err)
	}
	y, err := install.YAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	want := parseObjects(t, "install", y)
	ns := objectKey("v1", "Namespace", "", install.Namespace)
	if _, ok := want[ns]; !ok {
		t.Fatalf("the install has no %s", ns)
	}
	delete(want, ns)
	got := parseObjects(t, "chart", helmTemplate(t, helm, "",
		"image="+opts.Image, "proxyImage="+opts.ProxyImage, "trustDomain=", "createNamespace=false"))
	compareObjects(t, got, want)
}

// The chart's values schema refuses what trellis install kubernetes
// refuses, and names it doesn't know.
func TestHelmRefusedValues(t *testing.T) {
	helm := kubetest.Helm(t)
	for _, set := range []string{"replicas=0", "replicas=two", "image=", "replica=3"} {
		cmd := helmCommand(t, helm, "template", "trellis", chartDir, "--namespace", install.Namespace, "--set", set)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("helm template --set %s: rendered, want refused by values.schema.json", set)
		} else if !strings.Contains(string(out), "schema") {
			t.Errorf("helm template --set %s: %v, want a schema error:\n%s", set, err, out)
		}
	}
}

// helm lint passes, also with --strict (warnings are failures).
func TestHelmLint(t *testing.T) {
	helm := kubetest.Helm(t)
	cmd := helmCommand(t, helm, "lint", "--strict", chartDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint --strict %s: %v\n%s", chartDir, err, out)
	}
	t.Logf("helm lint:\n%s", out)
}

// The chart's crds/ holds exactly the CRDs the Go types make (crd.All),
// one file each. -update (internal/testutil's golden-file flag) rewrites
// them.
func TestHelmCRDs(t *testing.T) {
	crds, err := crd.All()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(chartDir, "crds")
	want := map[string][]byte{}
	for _, c := range crds {
		y, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		// status is the API server's; a manifest leaves it out.
		var m map[string]any
		if err := yaml.Unmarshal(y, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "status")
		if y, err = yaml.Marshal(m); err != nil {
			t.Fatal(err)
		}
		want[c.Name+".yaml"] = append([]byte(crdHeader), y...)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") {
			have = append(have, e.Name())
		}
	}
	if updating() {
		for _, name := range have {
			if _, ok := want[name]; !ok {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for name, y := range want {
			if err := os.WriteFile(filepath.Join(dir, name), y, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for _, name := range have {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: no such CRD in the Go types (internal/kube/crd); %s removes it", filepath.Join(dir, name), regenerate)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		got, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err != nil:
			t.Errorf("%v: %s writes it", err, regenerate)
		case !bytes.Equal(got, want[name]):
			t.Errorf("%s differs from the CRD the Go types (internal/kube/crd) make: %s rewrites it\n%s",
				filepath.Join(dir, name), regenerate, strings.Join(diffPaths("", parseYAML(t, got), parseYAML(t, want[name])), "\n"))
		}
	}
}

const crdHeader = "# Generated from the Go types (internal/kube/crd) by\n#   " + regenerate + "\n# Do not edit.\n"

// updating reports whether the test runs with -update, the flag
// internal/testutil registers for its golden files (install_test.go
// imports it for TestManifests' golden file).
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// helmTemplate renders the chart as helm install would apply it, CRDs
// included; ns is the release namespace, trellis-system when empty.
func helmTemplate(t *testing.T, helm, ns string, set ...string) []byte {
	t.Helper()
	if ns == "" {
		ns = install.Namespace
	}
	args := []string{"template", "trellis", chartDir, "--namespace", ns, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := helmCommand(t, helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// helmCommand runs helm with its cache, config and data in the test's
// temporary directory and no cluster.
func helmCommand(t *testing.T, helm string, args ...string) *exec.Cmd {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	return cmd
}
