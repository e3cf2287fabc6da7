package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/resources"
	"github.com/trellismesh/trellis/internal/kube/workloads"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// In Kubernetes mode a service's endpoints come from its EndpointSlices
// and pods, not from where proxies say they are: the catalog proxy
// registers an address nobody listens on, and calls still reach it at the
// address its pod has. The Service's ClusterIP is the virtual IP; the pod
// deleted, calls get 503. There is no kubelet: the test plays it (pod
// status) and the slice controller. EndpointSlices refuse loopback
// addresses, so the slice names 198.18.7.1 and the pod's status the
// loopback address the proxy listens on.
func TestEndpointsFromEndpointSlices(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	core := c.Client.CoreV1()
	c.Namespace(t, "shop", nil)
	if _, err := core.ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "catalog"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := core.Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "catalog"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "catalog"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	mesh := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	if _, err := c.Trellis(t, "meshes", "").Create(ctx, mesh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res := resources.New(c.Dynamic(t), testutil.Logger(t))
	if err := res.Start(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wl := workloads.New(c.Client, spiffeid.RequireTrustDomainFromString(controlplane.DefaultTrustDomain))
	if err := wl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cp := meshtest.StartControlPlane(t, controlplane.Config{Resources: res, Workloads: wl})

	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app, AdvertiseAddr: "127.0.0.1:1"})
	up := proxy.Upstream{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}
	frontend := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{up}})
	hc := &http.Client{Timeout: 5 * time.Second}
	fe := frontend.UpstreamAddr(0)

	// No pod yet: catalog is no mesh service.
	if got := call(t, hc, fe, "GET", "/items"); got.code == 200 {
		t.Fatalf("GET /items before the pod exists: %d", got.code)
	}
	_, port, _ := net.SplitHostPort(catalog.InboundAddr())
	pod, err := core.Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "catalog-1", Labels: map[string]string{"app": "catalog"},
			Annotations: map[string]string{inject.AnnotationStatus: "test", inject.AnnotationInboundPort: port}},
		Spec: corev1.PodSpec{ServiceAccountName: "catalog", Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP, pod.Status.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
	if pod, err = core.Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := true
	if _, err := c.Client.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "catalog-x", Labels: map[string]string{discoveryv1.LabelServiceName: "catalog"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{"198.18.7.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod.Name, UID: pod.UID},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, hc, fe, "GET", "/items", answer{code: 200, body: "ok"})
	for i := range 200 {
		if got := call(t, hc, fe, "GET", "/items/"+strconv.Itoa(i)); got.code != 200 {
			t.Fatalf("call %d through the slice's endpoint: %d", i, got.code)
		}
	}
	services, err := cp.Client(t).ListServices(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 1 || services[0].VirtualIP != svc.Spec.ClusterIP || services[0].Endpoints != 1 {
		t.Errorf("services %+v, want catalog with VIP %s (its ClusterIP) and one endpoint", services, svc.Spec.ClusterIP)
	}

	// The pod gone, its endpoint goes.
	if err := core.Pods("shop").Delete(ctx, "catalog-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "no endpoint after the pod is deleted", func() bool {
		return call(t, hc, fe, "GET", "/items").code == http.StatusServiceUnavailable
	})
}
