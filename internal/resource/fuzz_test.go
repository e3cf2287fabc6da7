package resource

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

var fuzzSeeds = []string{
	"",
	"---\n...\n",
	`apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog, namespace: shop, labels: {app: web}}
spec:
  selector: {service: catalog, matchLabels: {tier: backend}}
  action: ALLOW
  enforcement: enforce
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend", "spiffe://trellis.local/ns/ops/*"], notNamespaces: ["kube-*"]}]
    to:   [{methods: [GET], paths: ["/items", "/items/*"], ports: [8080, "9090"], hosts: ["*.shop"]}]
    when: [{key: "request.headers[x-tenant]", values: [a, b], notValues: ["*-test"]}]
---
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {mtls: {mode: PERMISSIVE}, authorization: {default: allow}, certificates: {workloadTTL: 90m}}
`,
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"certificates":{"workloadTTL":"1h"}}}`,
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"}}{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"rules":[{}]}}`,
	"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: trellis.dev/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a}, spec: {action: DENY, rules: [{to: [{notPorts: [22]}]}]}}\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{from: [{princpals: [x]}], to: [{methods: [GTE], ports: [http]}]}]}\n",
	"- a\n- b\n",
	"a: [\n",
	"kind: List\nitems: [null, 1, {kind: List}]\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, creationTimestamp: 2024-01-02T03:04:05Z, generation: 9}\nspec: null\n",
}

// FuzzDecode checks that nothing Decode accepts makes Validate panic, and
// that every valid object survives being written out as JSON or YAML and
// read back unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data, "fuzz.yaml")
		if err != nil {
			if objs != nil {
				t.Fatalf("Decode returned objects with an error: %v", err)
			}
			_ = err.Error()
			return
		}
		for i := range objs {
			o := objs[i]
			if err := Validate(&o); err != nil {
				_ = err.Error()
				continue
			}
			checkCanonical(t, o)
			j, err := json.Marshal(o)
			if err != nil {
				t.Fatalf("Marshal of a valid object: %v", err)
			}
			checkRoundTrip(t, o, j, "json")
			y, err := yaml.JSONToYAML(j)
			if err != nil {
				t.Fatalf("JSONToYAML of a valid object: %v", err)
			}
			checkRoundTrip(t, o, y, "yaml")
		}
	})
}

// FuzzValidate checks that Validate never panics on any object and that what
// it accepts is canonical.
func FuzzValidate(f *testing.F) {
	f.Add(APIVersion, KindMesh, "default", "", []byte(`{"mtls":{"mode":"STRICT"}}`))
	f.Add(APIVersion, KindMesh, "default", "x", []byte(`{"certificates":{"workloadTTL":5}}`))
	f.Add(APIVersion, KindAuthorizationPolicy, "a", "shop", []byte(`{"rules":[{"from":[{"principals":["*"]}],"to":[{"ports":["80"]}],"when":[{"key":"request.headers[a]","values":["b"]}]}]}`))
	f.Add(APIVersion, KindAuthorizationPolicy, "a.b", "", []byte(`{"selector":{"matchLabels":{"a":"b"}},"action":"DENY","rules":[]}`))
	f.Add("v1", "Thing", "", "Bad", []byte(`[`))
	f.Add(APIVersion, KindAuthorizationPolicy, "a", "shop", []byte(`{"rules":[{"to":[{"ports":[0, 1e99, "x", null]}]}],"x":1}`))
	f.Fuzz(func(t *testing.T, apiVersion, kind, name, namespace string, spec []byte) {
		o := Object{APIVersion: apiVersion, Kind: kind, Metadata: Metadata{Name: name, Namespace: namespace}, Spec: spec}
		if err := Validate(&o); err != nil {
			_ = err.Error()
			return
		}
		checkCanonical(t, o)
		j, err := json.Marshal(o)
		if err != nil {
			t.Fatalf("Marshal of a valid object: %v", err)
		}
		checkRoundTrip(t, o, j, "json")
	})
}

// checkCanonical checks that valid object o is unchanged by a second
// Validate and that its kind's accessor accepts it.
func checkCanonical(t *testing.T, o Object) {
	t.Helper()
	again := o
	again.Spec = bytes.Clone(o.Spec)
	if err := Validate(&again); err != nil {
		t.Fatalf("second Validate of %s: %v", o.Spec, err)
	}
	if !bytes.Equal(again.Spec, o.Spec) || again.Metadata.Namespace != o.Metadata.Namespace {
		t.Fatalf("second Validate: got %s, want %s", again.Spec, o.Spec)
	}
	var err error
	switch o.Kind {
	case KindMesh:
		_, err = MeshSpecOf(&o)
	case KindAuthorizationPolicy:
		_, err = AuthorizationPolicySpecOf(&o)
	}
	if err != nil {
		t.Fatalf("spec accessor rejects a valid object: %v", err)
	}
}

// checkRoundTrip decodes data, o written out as format, and checks that it
// validates to o again.
func checkRoundTrip(t *testing.T, o Object, data []byte, format string) {
	t.Helper()
	objs, err := Decode(data, "roundtrip")
	if err != nil {
		t.Fatalf("%s round trip: Decode(%s): %v", format, data, err)
	}
	if len(objs) != 1 {
		t.Fatalf("%s round trip: got %d objects from %s, want 1", format, len(objs), data)
	}
	got := objs[0]
	if err := Validate(&got); err != nil {
		t.Fatalf("%s round trip: Validate: %v\n%s", format, err, data)
	}
	if !bytes.Equal(got.Spec, o.Spec) {
		t.Fatalf("%s round trip: got spec %s, want %s", format, got.Spec, o.Spec)
	}
	gm, om := got.Metadata, o.Metadata
	if got.APIVersion != o.APIVersion || got.Kind != o.Kind || gm.Name != om.Name || gm.Namespace != om.Namespace ||
		gm.UID != om.UID || gm.ResourceVersion != om.ResourceVersion || gm.Generation != om.Generation ||
		!equalMaps(gm.Labels, om.Labels) || !equalMaps(gm.Annotations, om.Annotations) ||
		!equalTimes(gm.CreationTimestamp, om.CreationTimestamp) || !equalTimes(gm.UpdateTimestamp, om.UpdateTimestamp) {
		t.Fatalf("%s round trip: got %+v, want %+v", format, got, o)
	}
}

// equalMaps treats nil and empty maps as equal: omitempty drops both.
func equalMaps(a, b map[string]string) bool { return maps.Equal(a, b) }

func equalTimes(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}
