// Package webhook holds the admission webhooks Kubernetes mode serves: the
// validating webhook (Validator) that checks Trellis resources (Mesh,
// AuthorizationPolicy) at kubectl apply time with internal/resource's
// validator, so a bad policy gets the same field-path message as from
// trellis apply; and the injecting webhook (Injector) that adds the
// sidecar to pods of opted-in namespaces (internal/kube/inject).
//
// It must not depend on the control plane, the store, the proxy or the data
// plane, and needs no API client: it answers AdmissionReviews.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/resource"
)

// MaxReviewBytes bounds an AdmissionReview body: the API server limits
// objects to 1.5 MiB, and a review carries the object and its old version.
const MaxReviewBytes = 4 << 20

// ValidatePath is where the validating webhook is served.
const ValidatePath = "/validate"

// Validator is the validating webhook: an http.Handler for
// admission.k8s.io/v1 AdmissionReviews of trellis.dev objects.
type Validator struct{}

// ServeHTTP answers one AdmissionReview. A request that is not one gets
// 400 (the API server then applies the webhook's failurePolicy).
func (Validator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	serveReview(w, r, Review)
}

// serveReview reads a review (a JSON POST of at most MaxReviewBytes) and
// writes what review answers.
func serveReview(w http.ResponseWriter, r *http.Request, review func([]byte) ([]byte, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "trellis webhook: POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "trellis webhook: Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxReviewBytes+1))
	if err != nil {
		http.Error(w, "trellis webhook: read the review: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > MaxReviewBytes {
		http.Error(w, fmt.Sprintf("trellis webhook: review larger than %d bytes", MaxReviewBytes), http.StatusRequestEntityTooLarge)
		return
	}
	out, err := review(body)
	if err != nil {
		http.Error(w, "trellis webhook: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Review decides one AdmissionReview (its JSON) and returns the answering
// review. An error means data is not a review this webhook can answer.
func Review(data []byte) ([]byte, error) {
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &rev); err != nil {
		return nil, fmt.Errorf("decode the AdmissionReview: %w", err)
	}
	if rev.APIVersion != "admission.k8s.io/v1" || rev.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("want an admission.k8s.io/v1 AdmissionReview, got %s %s", rev.APIVersion, rev.Kind)
	}
	if rev.Request == nil {
		return nil, errors.New("the AdmissionReview has no request")
	}
	resp := decide(rev.Request)
	resp.UID = rev.Request.UID
	return json.Marshal(admissionv1.AdmissionReview{TypeMeta: rev.TypeMeta, Response: resp})
}

// decide validates the object of a CREATE or UPDATE; anything else is
// allowed (the webhook is registered for those two).
func decide(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	if req.Kind.Group != "trellis.dev" {
		return deny(http.StatusBadRequest, fmt.Sprintf("the trellis webhook validates trellis.dev objects, not %s %s", req.Kind.Group, req.Kind.Kind))
	}
	obj, err := Object(req.Object.Raw)
	if err != nil {
		return deny(http.StatusBadRequest, err.Error())
	}
	if obj.Metadata.Namespace == "" && req.Namespace != "" {
		obj.Metadata.Namespace = req.Namespace
	}
	if err := resource.Validate(&obj); err != nil {
		return deny(http.StatusUnprocessableEntity, err.Error())
	}
	return &admissionv1.AdmissionResponse{Allowed: true}
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: metav1.StatusReasonInvalid, Message: msg,
	}}
}

// Object converts a Kubernetes object of a Trellis kind (its JSON, as the
// API server stores it) to the resource.Object the validator and the rest
// of Trellis take: apiVersion, kind, name, namespace, labels, annotations
// and the spec as written. Server-set metadata (uid, resourceVersion,
// managedFields, ...) and status are left out.
func Object(raw []byte) (resource.Object, error) {
	if len(raw) == 0 {
		return resource.Object{}, errors.New("the request carries no object")
	}
	var k struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Namespace   string            `json:"namespace"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return resource.Object{}, fmt.Errorf("decode the object: %w", err)
	}
	o := resource.Object{
		APIVersion: k.APIVersion,
		Kind:       k.Kind,
		Metadata: resource.Metadata{
			Name: k.Metadata.Name, Namespace: k.Metadata.Namespace,
			Labels: k.Metadata.Labels, Annotations: withoutKubectlAnnotations(k.Metadata.Annotations),
		},
		Spec: k.Spec,
	}
	return o, nil
}

// withoutKubectlAnnotations drops what kubectl and the API server keep in
// annotations (kubectl.kubernetes.io/last-applied-configuration, and the
// like), which is no user setting of Trellis's.
func withoutKubectlAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if strings.Contains(k, "kubernetes.io/") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}
