package kubetest

import (
	"os"
	"path/filepath"
	"testing"
)

// Kubectl returns the path of the kubectl scripts/k8s-bins.sh builds
// beside kube-apiserver ($TRELLIS_KUBECTL overrides it). It skips the test
// under -short or when kubectl is missing, and fails it when kubectl is
// missing and TRELLIS_REQUIRE_ALL is set.
func Kubectl(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: -short skips the tests that run kubectl")
	}
	p := os.Getenv("TRELLIS_KUBECTL")
	if p == "" {
		apiserver, _ := BinDir()
		p = filepath.Join(filepath.Dir(apiserver), "kubectl")
	}
	if _, err := os.Stat(p); err != nil {
		msg := "kubetest: " + p + " missing: run make k8s-bins (scripts/k8s-bins.sh builds kubectl v" + KubernetesVersion + " once)"
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// KubeconfigFor writes a kubeconfig for the cluster that authenticates
// with token (a ServiceAccount's, say) and returns its path.
func (c *Cluster) KubeconfigFor(t testing.TB, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, p, kubeconfig(c.URL, c.CAPEM, token), 0o600)
	return p
}
