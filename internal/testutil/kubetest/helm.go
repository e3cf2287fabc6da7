package kubetest

import (
	"os"
	"path/filepath"
	"testing"
)

// HelmVersion is the helm scripts/k8s-bins.sh builds (it renders and
// lints deploy/helm/trellis in internal/kube/install's tests).
const HelmVersion = "4.3.2"

// HelmPath is where helm is: $TRELLIS_HELM, or the cache of
// scripts/k8s-bins.sh ($TRELLIS_K8S_CACHE or ~/.cache/trellis/k8s).
func HelmPath() string {
	if p := os.Getenv("TRELLIS_HELM"); p != "" {
		return p
	}
	cache := os.Getenv("TRELLIS_K8S_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "trellis", "k8s")
	}
	return filepath.Join(cache, "helm-v"+HelmVersion, "helm")
}

// Helm returns the path of helm, as Require does for the API server: it
// skips the test under -short or when helm is missing, and fails it when
// helm is missing and TRELLIS_REQUIRE_ALL is set.
func Helm(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: -short skips the tests that run helm")
	}
	p := HelmPath()
	if _, err := os.Stat(p); err != nil {
		msg := "kubetest: " + p + " missing: run make k8s-bins (scripts/k8s-bins.sh builds helm v" + HelmVersion + " once, about 2 minutes)"
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}
