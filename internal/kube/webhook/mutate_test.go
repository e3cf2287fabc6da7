package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/meshca"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

var injectCfg = inject.Config{
	Image:       "ghcr.io/trellismesh/trellis:test",
	ControlAddr: "trellis-control.trellis-system.svc:15012",
	CAConfigMap: "trellis-ca-bundle",
	Version:     "test",
}

// Pods created through a real API server in an opted-in namespace come
// out injected: the stored spec matches the golden file; a pod that opts
// out and pods of other namespaces are left alone; a bad annotation is
// refused with its name; the webhook asked again about an injected pod
// changes nothing.
func TestInjectionOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	core := c.Client.CoreV1()
	for ns, labels := range map[string]map[string]string{"shop": {inject.LabelNamespaceInject: "enabled"}, "plain": nil} {
		if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := core.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "frontend"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	url, bundle := serveWebhook(t, webhook.InjectPath, webhook.Injector{Config: injectCfg})
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-inject"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "inject.trellis.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: bundle},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{"CREATE"}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{inject.LabelNamespaceInject: "enabled"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(name string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "frontend"}, Annotations: ann},
			Spec: corev1.PodSpec{ServiceAccountName: "frontend", Containers: []corev1.Container{{
				Name: "app", Image: "shop/frontend:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			}}},
		}
	}
	// The configuration takes effect asynchronously.
	var got *corev1.Pod
	n := 0
	testutil.Eventually(t, "the injecting webhook in force", func() bool {
		n++
		p, err := core.Pods("shop").Create(ctx, pod("probe-"+string(rune('a'+n%26))+time.Now().Format("150405.000000")[7:], nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && p.Annotations[inject.AnnotationStatus] == "test"
	})
	got, err = core.Pods("shop").Create(ctx, pod("frontend-1", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "injected-pod.yaml", stableSpec(t, got))

	// Asked again about the stored pod (reinvocation), the webhook changes
	// nothing.
	raw, _ := json.Marshal(got)
	if resp := injectReview(t, raw); resp.Patch != nil || !resp.Allowed {
		t.Errorf("second pass over an injected pod: allowed=%v patch %s", resp.Allowed, resp.Patch)
	}

	// Opted out, and another namespace: untouched.
	out, err := core.Pods("shop").Create(ctx, pod("frontend-2", map[string]string{inject.AnnotationInject: "false"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := core.Pods("plain").Create(ctx, pod("frontend-1", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{out, plain} {
		if len(p.Spec.InitContainers) != 0 || p.Annotations[inject.AnnotationStatus] != "" {
			t.Errorf("pod %s/%s was injected", p.Namespace, p.Name)
		}
	}

	// A bad annotation: refused, naming it.
	_, err = core.Pods("shop").Create(ctx, pod("frontend-3", map[string]string{inject.AnnotationAppPort: "eighty"}), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `annotation trellis.dev/app-port: "eighty" is not a port number`) {
		t.Errorf("pod with a bad annotation: %v", err)
	}
}

// stableSpec is the pod's spec as YAML without what the API server makes
// up per pod (the ServiceAccount token volume's random name, node and
// scheduling defaults do not vary).
func stableSpec(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	spec := p.Spec.DeepCopy()
	isAPIAccess := func(name string) bool { return strings.HasPrefix(name, "kube-api-access-") }
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return isAPIAccess(v.Name) })
	for i := range spec.Containers {
		spec.Containers[i].VolumeMounts = slices.DeleteFunc(spec.Containers[i].VolumeMounts, func(m corev1.VolumeMount) bool { return isAPIAccess(m.Name) })
	}
	for i := range spec.InitContainers {
		spec.InitContainers[i].VolumeMounts = slices.DeleteFunc(spec.InitContainers[i].VolumeMounts, func(m corev1.VolumeMount) bool { return isAPIAccess(m.Name) })
	}
	b, err := yaml.Marshal(map[string]any{"annotations": p.Annotations, "spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func injectReview(t *testing.T, podJSON []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	in, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u", Operation: admissionv1.Create, Namespace: "shop",
			Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Object: runtime.RawExtension{Raw: podJSON},
		},
	})
	out, err := webhook.Injector{Config: injectCfg}.Review(in)
	if err != nil {
		t.Fatal(err)
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &rev); err != nil {
		t.Fatal(err)
	}
	return rev.Response
}

// serveWebhook serves h at path over TLS with a certificate of a mesh CA
// and returns the URL and the CA bundle to register.
func serveWebhook(t *testing.T, path string, h http.Handler) (string, []byte) {
	t.Helper()
	ca, _ := testutil.NewCA(t, "trellis.test")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := meshca.NewServingCert(ca, time.Now, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Handler: mux, TLSConfig: sc.TLSConfig(false)}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	var bundle bytes.Buffer
	for _, r := range ca.Roots() {
		_ = pem.Encode(&bundle, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	return "https://" + l.Addr().String() + path, bundle.Bytes()
}
