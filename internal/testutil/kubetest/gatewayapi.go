package kubetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// GatewayAPIModule is the module whose standard-channel CRDs
// InstallGatewayAPICRDs installs: the one go.mod requires.
const GatewayAPIModule = "sigs.k8s.io/gateway-api"

// InstallGatewayAPICRDs creates the Gateway API's standard-channel CRDs,
// read from the module cache (config/crd/standard of the version go.mod
// requires), and returns once HTTPRoutes and GRPCRoutes are served.
func (c *Cluster) InstallGatewayAPICRDs(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	dir := moduleDir(t, GatewayAPIModule)
	files, err := filepath.Glob(filepath.Join(dir, "config", "crd", "standard", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("kubetest: no Gateway API CRDs in %s: %v", dir, err)
	}
	ext, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		for doc := range strings.SplitSeq(string(raw), "\n---") {
			var d apiextensionsv1.CustomResourceDefinition
			if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
				t.Fatalf("kubetest: %s: %v", f, err)
			}
			if d.Kind != "CustomResourceDefinition" {
				continue
			}
			if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &d, metav1.CreateOptions{}); err != nil {
				t.Fatalf("kubetest: create CRD %s: %v", d.Name, err)
			}
		}
	}
	dyn := c.Dynamic(t)
	deadline := time.Now().Add(30 * time.Second)
	for _, plural := range []string{"httproutes", "grpcroutes"} {
		r := dyn.Resource(schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: plural})
		for {
			if _, err := r.List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("kubetest: %s not served after 30s: %v", plural, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// moduleDir is the directory of module path in the module cache.
func moduleDir(t testing.TB, path string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", path).Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("kubetest: go list -m %s: %v (is it in go.mod, and downloaded?)", path, err)
	}
	return strings.TrimSpace(string(out))
}
