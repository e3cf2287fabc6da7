package crd_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// Every kind has a CRD whose schema names every JSON field of its spec
// type, so a field added to internal/resource reaches Kubernetes too.
func TestEveryKindHasACRD(t *testing.T) {
	crds, err := crd.All()
	if err != nil {
		t.Fatal(err)
	}
	kinds := resource.Kinds()
	if len(crds) != len(kinds) {
		t.Fatalf("%d CRDs for %d kinds", len(crds), len(kinds))
	}
	for i, k := range kinds {
		c := crds[i]
		if c.Name != k.Plural+".trellis.dev" || c.Spec.Names.Kind != k.Kind {
			t.Errorf("CRD %d is %s (kind %s), want %s.trellis.dev", i, c.Name, c.Spec.Names.Kind, k.Plural)
		}
		wantScope := apiextensionsv1.ClusterScoped
		if k.Namespaced {
			wantScope = apiextensionsv1.NamespaceScoped
		}
		if c.Spec.Scope != wantScope {
			t.Errorf("%s: scope %s, want %s", k.Kind, c.Spec.Scope, wantScope)
		}
		v := c.Spec.Versions[0]
		if v.Subresources == nil || v.Subresources.Status == nil {
			t.Errorf("%s: no status subresource", k.Kind)
		}
		status := v.Schema.OpenAPIV3Schema.Properties["status"]
		if _, ok := status.Properties["observedGeneration"]; !ok {
			t.Errorf("%s: status has no observedGeneration", k.Kind)
		}
	}
	// Spot checks of the walk: nested lists, a boolean deep inside, the
	// int-or-string port, a map of strings.
	ap := crds[1].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	to := ap.Properties["rules"].Items.Schema.Properties["to"].Items.Schema
	if got := to.Properties["pathsIgnoreCase"].Type; got != "boolean" {
		t.Errorf("spec.rules[].to[].pathsIgnoreCase: type %q, want boolean", got)
	}
	if !to.Properties["ports"].Items.Schema.XIntOrString {
		t.Error("spec.rules[].to[].ports[]: want int-or-string")
	}
	if got := ap.Properties["selector"].Properties["matchLabels"].AdditionalProperties.Schema.Type; got != "string" {
		t.Errorf("spec.selector.matchLabels values: type %q, want string", got)
	}
}

// The CRDs are accepted and established by a real API server; objects
// written as trellis apply takes them are stored; a structurally wrong
// one is refused with its field path; printer columns answer.
func TestCRDsOnARealAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ext, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds, err := crd.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range crds {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", d.Name, err)
		}
	}
	for _, d := range crds {
		testutil.Eventually(t, d.Name+" established", func() bool {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, d.Name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true
				}
			}
			return false
		})
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	policies := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "authorizationpolicies"})
	meshes := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"})
	c.Namespace(t, "shop", nil)

	// What trellis apply takes is stored as written: every field of a
	// full policy and mesh survives the schema (nothing pruned).
	for _, doc := range []string{fullPolicy, fullMesh} {
		u := kubetest.Object(t, doc)
		var ri dynamic.ResourceInterface = meshes
		if u.GetKind() == resource.KindAuthorizationPolicy {
			ri = policies.Namespace("shop")
		}
		got, err := ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		if err != nil {
			t.Fatalf("create %s: %v", u.GetKind(), err)
		}
		want, _ := json.Marshal(u.Object["spec"])
		have, _ := json.Marshal(got.Object["spec"])
		if string(want) != string(have) {
			t.Errorf("%s spec changed on the way in:\nsent   %s\nstored %s", u.GetKind(), want, have)
		}
		// trellis apply accepts the same document.
		objs, err := resource.Decode([]byte(doc), "test.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := resource.Validate(&objs[0]); err != nil {
			t.Fatalf("the validator refuses the test document: %v", err)
		}
	}

	// Structurally wrong: refused with the field path.
	for _, tc := range []struct{ doc, path string }{
		{"spec: {rules: allow-everything}", "spec.rules"},
		{"spec: {selector: {matchLabels: {app: [a, b]}}}", "spec.selector.matchLabels.app"},
		{"spec: {rules: [{to: [{pathsIgnoreCase: maybe}]}]}", "spec.rules[0].to[0].pathsIgnoreCase"},
		{"spec: {rules: [{bogus: 1}]}", "spec.rules[0].bogus"},
	} {
		u := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: shop}\n"+tc.doc)
		_, err := policies.Namespace("shop").Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		if err == nil || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: got %v, want a refusal naming %s", tc.doc, err, tc.path)
		}
		if err != nil && !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
			t.Errorf("%s: %v is not an Invalid or BadRequest error", tc.doc, err)
		}
	}

	// Printer columns, as kubectl get shows them.
	raw, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/apis/trellis.dev/v1alpha1/namespaces/shop/authorizationpolicies").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		ColumnDefinitions []struct{ Name string } `json:"columnDefinitions"`
		Rows              []struct{ Cells []any } `json:"rows"`
	}
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatalf("decode the table: %v", err)
	}
	var names []string
	for _, col := range table.ColumnDefinitions {
		names = append(names, col.Name)
	}
	if got := strings.Join(names, ","); got != "Name,Action,Enforcement,Service,Accepted,Age" {
		t.Errorf("columns %s", got)
	}
	if len(table.Rows) != 1 || len(table.Rows[0].Cells) < 4 || table.Rows[0].Cells[1] != "ALLOW" || table.Rows[0].Cells[3] != "catalog" {
		t.Errorf("rows %v, want the one policy with action ALLOW on service catalog", table.Rows)
	}
}

const fullPolicy = `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog-readers, namespace: shop}
spec:
  selector: {service: catalog, matchLabels: {tier: backend}}
  action: ALLOW
  enforcement: audit
  rules:
  - from:
    - principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]
      notNamespaces: [kube-system]
      services: [frontend]
    to:
    - methods: [GET, HEAD]
      paths: ["/items", "/items/*"]
      notPaths: ["/items/secret"]
      ports: [8080, "9090"]
      hosts: ["catalog.shop"]
      pathsIgnoreCase: true
    when:
    - key: request.headers[x-tenant]
      values: [acme]
`

const fullMesh = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
  authorization: {default: deny, hidePolicy: true}
  certificates: {workloadTTL: 24h}
  outbound: {mode: block}
  http:
    pathNormalization: strict
    allowedUpgrades: [websocket]
    stripHeaders: [x-spiffe-id, "x-trellis-*"]
`
