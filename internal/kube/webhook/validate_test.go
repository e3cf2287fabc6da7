package webhook_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/kube/webhook"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// cases are documents trellis apply refuses, each for its own reason, and
// one it accepts.
var cases = []struct {
	name string
	doc  string
	ok   bool
}{
	{"valid", "spec: {selector: {service: catalog}, rules: [{to: [{methods: [GET], paths: [/items]}]}]}", true},
	{"bad method", "spec: {rules: [{to: [{methods: [GTE]}]}]}", false},
	{"bad action", "spec: {action: PERMIT}", false},
	{"bad principal", "spec: {rules: [{from: [{principals: [frontend]}]}]}", false},
	{"bad condition key", "spec: {rules: [{when: [{key: request.body, values: [x]}]}]}", false},
	{"bad service name", "spec: {selector: {service: Catalog_Service}}", false},
}

const policyHead = "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n"

// applyMessage is what trellis apply says of doc: the validator's error
// without the file prefix.
func applyMessage(t *testing.T, doc string) string {
	t.Helper()
	objs, err := resource.Decode([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs[0].Source = ""
	if err := resource.Validate(&objs[0]); err != nil {
		return err.Error()
	}
	return ""
}

func review(t *testing.T, op admissionv1.Operation, doc string) *admissionv1.AdmissionResponse {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(m)
	in, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("u-1"), Operation: op, Namespace: "shop",
			Kind:   metav1.GroupVersionKind{Group: "trellis.dev", Version: "v1alpha1", Kind: "AuthorizationPolicy"},
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	out, err := webhook.Review(in)
	if err != nil {
		t.Fatal(err)
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &rev); err != nil {
		t.Fatal(err)
	}
	if rev.Response == nil || rev.Response.UID != "u-1" || rev.Kind != "AdmissionReview" {
		t.Fatalf("answer %s: want an AdmissionReview answering uid u-1", out)
	}
	return rev.Response
}

func TestReviewSaysWhatApplySays(t *testing.T) {
	for _, tc := range cases {
		doc := policyHead + tc.doc
		for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
			resp := review(t, op, doc)
			if resp.Allowed != tc.ok {
				t.Errorf("%s (%s): allowed=%v, want %v (%v)", tc.name, op, resp.Allowed, tc.ok, resp.Result)
				continue
			}
			if !tc.ok {
				if want := applyMessage(t, doc); resp.Result.Message != want || want == "" {
					t.Errorf("%s: webhook says %q, trellis apply says %q", tc.name, resp.Result.Message, want)
				}
			}
		}
	}
	// Deletes are not judged.
	if resp := review(t, admissionv1.Delete, policyHead+cases[1].doc); !resp.Allowed {
		t.Errorf("DELETE refused: %v", resp.Result)
	}
}

func TestValidatorRefusesWhatIsNoReview(t *testing.T) {
	srv := &http.Server{Handler: webhook.Validator{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + l.Addr().String() + webhook.ValidatePath
	for _, tc := range []struct {
		method, ctype, body string
		code                int
	}{
		{http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "text/plain", "{}", http.StatusUnsupportedMediaType},
		{http.MethodPost, "application/json", "not json", http.StatusBadRequest},
		{http.MethodPost, "application/json", `{"apiVersion":"v1","kind":"Pod"}`, http.StatusBadRequest},
		{http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{http.MethodPost, "application/json", strings.Repeat(" ", webhook.MaxReviewBytes+1), http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(tc.method, url, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s %.30q: %d, want %d", tc.method, tc.ctype, tc.body, resp.StatusCode, tc.code)
		}
	}
}

// On a real API server: with the webhook registered, kubectl-style
// creates of the bad documents are refused with trellis apply's message,
// and the good one is stored.
func TestWebhookOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.Namespace(t, "shop", nil)

	// The webhook, served with a certificate of the mesh CA.
	url, bundle := serveWebhook(t, webhook.ValidatePath, webhook.Validator{})
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	_, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-validate"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "validate.trellis.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: bundle},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{"CREATE", "UPDATE"}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"trellis.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"*"}}}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	// The configuration takes effect asynchronously: wait until a bad
	// policy is refused by it.
	testutil.Eventually(t, "the webhook in force", func() bool {
		_, err := policies.Create(ctx, kubetest.Object(t, policyHead+cases[1].doc), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), "GTE")
	})
	for i, tc := range cases {
		doc := strings.Replace(policyHead, "name: p", "name: p"+string(rune('a'+i)), 1) + tc.doc
		_, err := policies.Create(ctx, kubetest.Object(t, doc), metav1.CreateOptions{})
		if tc.ok {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		want := applyMessage(t, doc)
		if err == nil || !strings.Contains(err.Error(), want) || want == "" {
			t.Errorf("%s: API server says %v; want it to carry trellis apply's %q", tc.name, err, want)
		}
	}
}
