package workloads_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/workloads"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Services, EndpointSlices and Pods on a real API server become the mesh's
// workloads: SPIFFE IDs from ServiceAccounts, labels, pod addresses on the
// proxy's inbound port, ClusterIPs as virtual IPs, readiness; pods without
// the sidecar and Services without a mesh workload are no part of it; a
// deleted pod leaves. The kubelet and the EndpointSlice controller do not
// run here: the test plays them (pod status, slices).
func TestViewFromARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	core := c.Client.CoreV1()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Namespace(t, "shop", nil)
	for _, sa := range []string{"catalog", "legacy"} {
		must(core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}))
	}
	grpc := "grpc"
	svc := func(name string, appProtocol *string) *corev1.Service {
		s, err := core.Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80, AppProtocol: appProtocol}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	catalog := svc("catalog", &grpc)
	svc("legacy", nil)
	pod := func(name, sa, ip string, injected bool) *corev1.Pod {
		ann := map[string]string{}
		if injected {
			ann[inject.AnnotationStatus] = "test"
		}
		p, err := core.Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": sa, "tier": "backend"}, Annotations: ann},
			Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}} // as the kubelet would
		if p, err = core.Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c1 := pod("catalog-1", "catalog", "198.18.5.1", true)
	c2 := pod("catalog-2", "catalog", "198.18.5.2", true)
	l1 := pod("legacy-1", "legacy", "198.18.5.9", false)
	slice := func(service string, pods ...*corev1.Pod) {
		ready, notReady := true, false
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: service + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		for i, p := range pods {
			r := &ready
			if i == 1 {
				r = &notReady // the second catalog pod is not ready yet
			}
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{p.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{Ready: r},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: p.Name, UID: p.UID},
			})
		}
		must(c.Client.DiscoveryV1().EndpointSlices("shop").Create(ctx, es, metav1.CreateOptions{}))
	}
	slice("catalog", c1, c2)
	slice("legacy", l1)

	src := workloads.New(c.Client, spiffeid.RequireTrustDomainFromString("trellis.test"))
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var v workloads.View
	testutil.Eventually(t, "both catalog workloads", func() bool {
		var err error
		v, err = src.View()
		return err == nil && len(v.Workloads) == 2
	})
	key := snapshot.ServiceKey{Namespace: "shop", Name: "catalog"}
	if got := fmt.Sprint(v.Services); got != "[shop/catalog]" {
		t.Errorf("services %s, want only shop/catalog (legacy has no pod with the sidecar)", got)
	}
	if v.VIPs[key] != catalog.Spec.ClusterIP || catalog.Spec.ClusterIP == "" {
		t.Errorf("catalog's VIP %q, want its ClusterIP %q", v.VIPs[key], catalog.Spec.ClusterIP)
	}
	for i, w := range v.Workloads {
		want := snapshot.Workload{
			Instance: fmt.Sprintf("shop/catalog-%d/catalog", i+1), SPIFFEID: "spiffe://trellis.test/ns/shop/sa/catalog",
			Service: "catalog", Namespace: "shop", AdvertiseAddr: fmt.Sprintf("198.18.5.%d:15006", i+1), Protocol: "grpc",
			Connected: i == 0,
		}
		if w.Instance != want.Instance || w.SPIFFEID != want.SPIFFEID || w.Service != want.Service || w.AdvertiseAddr != want.AdvertiseAddr ||
			w.Protocol != want.Protocol || w.Connected != want.Connected || w.Labels["tier"] != "backend" {
			t.Errorf("workload %d:\n got %+v\nwant %+v (labels with tier=backend)", i, w, want)
		}
	}

	// A deleted pod leaves, and the change is signalled.
	select {
	case <-src.Changed(): // an earlier change not taken yet
	default:
	}
	gen := src.Generation()
	if err := core.Pods("shop").Delete(ctx, "catalog-2", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Changed():
	case <-time.After(30 * time.Second):
		t.Fatal("no change signalled after a pod was deleted")
	}
	testutil.Eventually(t, "catalog-2 gone", func() bool {
		v, err := src.View()
		return err == nil && len(v.Workloads) == 1 && v.Workloads[0].Instance == "shop/catalog-1/catalog"
	})
	if src.Generation() <= gen {
		t.Errorf("generation %d after a change, was %d", src.Generation(), gen)
	}
}
