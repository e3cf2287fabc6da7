package resource

import (
	"strings"
	"testing"
)

func TestDecodeIstioPointsToImport(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop, managedFields: []}\nspec: {}\n",
		"apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec: {}\n",
	} {
		objs, err := Decode([]byte(doc), "istio.yaml")
		if err == nil {
			t.Errorf("Decode(%q) = %d objects, want an error", doc, len(objs))
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "trellis import istio -f FILE") || !strings.HasPrefix(msg, "istio.yaml#1: ") || !strings.Contains(msg, "apiVersion: ") {
			t.Errorf("Decode(%q): %q, want it to name the document and field and point to trellis import istio", doc, msg)
		}
	}
	// A Trellis object next to an Istio one: nothing is decoded.
	objs, err := Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"), "f.yaml")
	if err == nil || objs != nil || !strings.Contains(err.Error(), "f.yaml#2: AuthorizationPolicy default/a: apiVersion") {
		t.Errorf("mixed file: got %d objects, %v; want an error naming f.yaml#2", len(objs), err)
	}
	// Look-alikes are not Istio's.
	if _, err := Decode([]byte("apiVersion: notistio.io/v1\nkind: Mesh\nmetadata: {name: default}\n"), "x.yaml"); err != nil && strings.Contains(err.Error(), "import istio") {
		t.Errorf("notistio.io: %v", err)
	}
}

func TestDocuments(t *testing.T) {
	got, err := Documents([]byte("a: 1\n---\n---\n- x\n"), "f.yaml")
	if err != nil || len(got) != 2 {
		t.Fatalf("Documents = %v, %v; want two values", got, err)
	}
	if m, ok := got[0].(map[string]any); !ok || m["a"] == nil {
		t.Errorf("first document = %#v, want a mapping with a", got[0])
	}
	if _, err := Documents([]byte("a: 1\n---\nb: [\n"), "f.yaml"); err == nil || !strings.HasPrefix(err.Error(), "f.yaml#2: invalid YAML") {
		t.Errorf("bad second document: %v, want an error naming f.yaml#2", err)
	}
}
