package cabundle_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/kube/cabundle"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Namespaces that opt into injection get the CA bundle ConfigMap, at start
// and when they opt in later, with the bundle the control plane gave (a
// stale one is replaced); others get none.
func TestBundleInOptedInNamespaces(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core := c.Client.CoreV1()
	mkns := func(name string, labels map[string]string) {
		t.Helper()
		if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	on := map[string]string{inject.LabelNamespaceInject: "enabled"}
	mkns("shop", on)
	mkns("plain", nil)
	mkns("stale", on)
	if _, err := core.ConfigMaps("stale").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "trellis-ca-bundle"},
		Data: map[string]string{cabundle.Key: "old"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := cabundle.New(c.Client, "trellis-ca-bundle", testutil.Logger(t))
	const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	s.SetBundle([]byte(pem))
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	has := func(ns string) bool {
		cm, err := core.ConfigMaps(ns).Get(ctx, "trellis-ca-bundle", metav1.GetOptions{})
		return err == nil && cm.Data[cabundle.Key] == pem
	}
	testutil.Eventually(t, "shop and stale hold the bundle", func() bool { return has("shop") && has("stale") })
	mkns("web", on)
	testutil.Eventually(t, "web, opted in later, holds the bundle", func() bool { return has("web") })
	if _, err := core.ConfigMaps("plain").Get(ctx, "trellis-ca-bundle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("plain, not opted in: %v, want no ConfigMap", err)
	}
}
