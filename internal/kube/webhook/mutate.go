package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellismesh/trellis/internal/kube/inject"
)

// InjectPath is where the injecting (mutating) webhook is served.
const InjectPath = "/inject"

// Injector is the mutating webhook that adds the sidecar to pods created
// in opted-in namespaces (the webhook configuration's namespaceSelector
// picks them; a pod opts out with the annotation trellis.dev/inject:
// "false").
type Injector struct {
	Config inject.Config
}

// ServeHTTP answers one AdmissionReview of a pod.
func (in Injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	serveReview(w, r, in.Review)
}

// Review answers one AdmissionReview (its JSON) of a pod CREATE with the
// JSON patch that injects it; a pod that opted out, or was injected by
// this version already, gets no patch.
func (in Injector) Review(data []byte) ([]byte, error) {
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &rev); err != nil {
		return nil, fmt.Errorf("decode the AdmissionReview: %w", err)
	}
	if rev.APIVersion != "admission.k8s.io/v1" || rev.Kind != "AdmissionReview" || rev.Request == nil {
		return nil, fmt.Errorf("want an admission.k8s.io/v1 AdmissionReview with a request, got %s %s", rev.APIVersion, rev.Kind)
	}
	resp := in.decide(rev.Request)
	resp.UID = rev.Request.UID
	return json.Marshal(admissionv1.AdmissionReview{TypeMeta: rev.TypeMeta, Response: resp})
}

func (in Injector) decide(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, "decode the pod: "+err.Error())
	}
	if injectedBy(&pod, in.Config.Version) {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	injected, err := inject.Pod(&pod.ObjectMeta, &pod.Spec, in.Config)
	if err != nil {
		name := pod.Name
		if name == "" {
			name = pod.GenerateName + "*"
		}
		return deny(http.StatusBadRequest, fmt.Sprintf("trellis sidecar injection of pod %s/%s: %v", req.Namespace, name, err))
	}
	if !injected {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	// "add" replaces a member that exists (RFC 6902 4.1), so the two
	// operations hold whether the pod had annotations or not.
	patch, err := json.Marshal([]map[string]any{
		{"op": "add", "path": "/metadata/annotations", "value": pod.Annotations},
		{"op": "add", "path": "/spec", "value": pod.Spec},
	})
	if err != nil {
		return deny(http.StatusInternalServerError, err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

// injectedBy: the pod carries this version's mark and its sidecar, so a
// second pass (reinvocation, or a copy of an injected pod) changes nothing.
func injectedBy(pod *corev1.Pod, version string) bool {
	if pod.Annotations[inject.AnnotationStatus] != version {
		return false
	}
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.ProxyContainer })
}
