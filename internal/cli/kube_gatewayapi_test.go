//go:build !trellis_nokube

package cli_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// trellis control --kubernetes with the Gateway API's CRDs installed: an
// HTTPRoute with a Service parent and a 90/10 split is a Route of the
// control plane, which trellis get routes shows.
func TestControlKubernetesGatewayAPI(t *testing.T) {
	clearEnv(t)
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ns := range []string{"trellis-system", "shop"} {
		c.Namespace(t, ns, nil)
	}
	c.InstallCRDs(t)
	c.InstallGatewayAPICRDs(t)
	for _, name := range []string{"catalog", "catalog-v1", "catalog-v2"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}}
		if _, err := c.Client.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Dynamic(t).Resource(resources.HTTPRoutes).Namespace("shop").Create(ctx, kubetest.Object(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog}]
  rules:
  - backendRefs:
    - {name: catalog-v1, port: 8080, weight: 90}
    - {name: catalog-v2, port: 8080, weight: 10}
`), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "cp")
	api := freeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		var out strings.Builder
		code := cli.Main(runCtx, []string{"control", "--kubernetes", "--kubeconfig", c.Kubeconfig, "--kube-namespace", "trellis-system",
			"--data-dir", dir, "--api-addr", api, "--grpc-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0", "--log-level", "error"},
			strings.NewReader(""), &out, &out)
		if code != cli.ExitOK {
			t.Logf("trellis control: %s", out.String())
		}
		done <- code
	}()
	defer func() { stop(); <-done }()
	testutil.Eventually(t, "trellis control --kubernetes ready", func() bool {
		resp, err := http.Get("http://" + api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	get := func(a ...string) result {
		return run(t, "", append([]string{"--api", "http://" + api, "--token-file", filepath.Join(dir, "admin.token"), "get", "routes", "-n", "shop"}, a...)...)
	}
	testutil.Eventually(t, "get routes lists the HTTPRoute's Route", func() bool {
		r := get()
		return r.code == cli.ExitOK && strings.Contains(r.stdout, "httproute.canary.catalog")
	})
	r := get("httproute.canary.catalog", "-o", "json")
	for _, want := range []string{`"service":"catalog"`, `"service":"catalog-v1","weight":90`, `"service":"catalog-v2","weight":10`} {
		if !strings.Contains(strings.Join(strings.Fields(r.stdout), ""), want) {
			t.Errorf("get routes -o json: %s\nwant %s", r.stdout, want)
		}
	}
}
