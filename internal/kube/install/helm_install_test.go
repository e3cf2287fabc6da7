package install_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// helm install, as docs/kubernetes.md shows it (the release in the default
// namespace, the chart making trellis-system), puts every object of the
// install into a real API server; helm upgrade changes the replicas; helm
// uninstall takes the objects and keeps the CRDs (crds/), as trellis
// uninstall kubernetes does.
func TestHelmInstall(t *testing.T) {
	helm := kubetest.Helm(t)
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(args ...string) {
		t.Helper()
		cmd := helmCommand(t, helm, append(args, "--kubeconfig", c.Kubeconfig)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
	}
	set := []string{"--set", "image=" + opts.Image, "--set", "proxyImage=" + opts.ProxyImage}

	run(append([]string{"install", "trellis", chartDir}, set...)...)
	objs, err := install.Objects(opts)
	if err != nil {
		t.Fatal(err)
	}
	dyn, mapper := c.Dynamic(t), c.Mapper(t)
	get := func(o runtime.Object) error {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		_, err = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace()).Get(ctx, u.GetName(), metav1.GetOptions{})
		return err
	}
	for _, o := range objs {
		if err := get(o); err != nil {
			t.Errorf("after helm install: %T: %v", o, err)
		}
	}

	run(append([]string{"upgrade", "trellis", chartDir, "--set", "replicas=3"}, set...)...)
	d, err := c.Client.AppsV1().Deployments(install.Namespace).Get(ctx, install.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("after helm upgrade --set replicas=3: %d replicas", *d.Spec.Replicas)
	}

	run("uninstall", "trellis")
	for _, o := range objs {
		err := get(o)
		switch kind := o.GetObjectKind().GroupVersionKind().Kind; kind {
		case "CustomResourceDefinition":
			if err != nil {
				t.Errorf("the CRD after helm uninstall: %v", err)
			}
		case "Namespace":
			// Terminating: the API server has no namespace controller to
			// finish deleting it.
		default:
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s after helm uninstall: %v, want not found", kind, err)
			}
		}
	}
}
