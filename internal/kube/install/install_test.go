package install_test

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

var opts = install.Options{Image: "ghcr.io/trellismesh/trellis:test", ProxyImage: "ghcr.io/trellismesh/trellis-proxy:test"}

// The manifests are what the golden file shows, and a real API server
// takes every object as it is (no field refused, no unknown field): the
// namespace, the CRDs, RBAC, the Deployment, the webhook configurations.
func TestManifests(t *testing.T) {
	objs, err := install.Objects(opts)
	if err != nil {
		t.Fatal(err)
	}
	y, err := install.YAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "install.yaml", string(y))

	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kinds := c.Apply(t, objs)
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"} {
		if !kinds[k] {
			t.Errorf("no %s in the install", k)
		}
	}
	d, err := c.Client.AppsV1().Deployments(install.Namespace).Get(ctx, install.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 || !strings.Contains(strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "), "control --kubernetes") {
		t.Errorf("deployment: %d replicas, args %v", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
	}

	// Uninstall keeps the CRDs and the namespace; --purge takes them too.
	dyn, mapper := c.Dynamic(t), c.Mapper(t)
	deleted, err := install.Uninstall(ctx, dyn, mapper, opts, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) == 0 || deleted[0] != "MutatingWebhookConfiguration trellis-inject" || deleted[1] != "ValidatingWebhookConfiguration trellis-validate" {
		t.Errorf("deleted %v, want the webhook configurations first", deleted)
	}
	if _, err := c.Client.AppsV1().Deployments(install.Namespace).Get(ctx, install.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("deployment after uninstall: %v", err)
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crdGVR).Get(ctx, "authorizationpolicies.trellis.dev", metav1.GetOptions{}); err != nil {
		t.Errorf("the CRD after uninstall without --purge: %v", err)
	}
	again, err := install.Uninstall(ctx, dyn, mapper, opts, false)
	if err != nil || len(again) != 0 {
		t.Errorf("a second uninstall deleted %v, %v; want nothing", again, err)
	}
	if _, err := install.Uninstall(ctx, dyn, mapper, opts, true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the CRDs gone after --purge", func() bool {
		_, err := dyn.Resource(crdGVR).Get(ctx, "authorizationpolicies.trellis.dev", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}
