package webhook_test

import (
	"encoding/json"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/trellismesh/trellis/internal/kube/webhook"
)

// FuzzReview: whatever the API server (or anyone reaching the port) sends,
// Review answers a review for the same uid or returns an error, and never
// panics.
func FuzzReview(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","kind":{"group":"trellis.dev","version":"v1alpha1","kind":"AuthorizationPolicy"},"object":{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"p","namespace":"shop"},"spec":{"rules":[{"to":[{"methods":["GET"]}]}]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","operation":"UPDATE","kind":{"group":"trellis.dev","kind":"Mesh"},"object":{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"mtls":{"mode":"strict"}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"3","operation":"CREATE","kind":{"group":"trellis.dev"},"object":null}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := webhook.Review(data)
		if err != nil {
			return
		}
		var in, rev admissionv1.AdmissionReview
		if err := json.Unmarshal(data, &in); err != nil {
			t.Fatalf("Review answered input that does not decode: %v", err)
		}
		if err := json.Unmarshal(out, &rev); err != nil {
			t.Fatalf("Review's answer does not decode: %v", err)
		}
		if rev.Response == nil || rev.Response.UID != in.Request.UID {
			t.Fatalf("answer %s does not answer uid %q", out, in.Request.UID)
		}
		if !rev.Response.Allowed && (rev.Response.Result == nil || rev.Response.Result.Message == "") {
			t.Fatalf("a refusal without a message: %s", out)
		}
	})
}
