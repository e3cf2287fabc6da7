package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
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
	"apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: permissive}, authorization: {default: ALLOW}, outbound: {mode: Block}}\n",
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"certificates":{"workloadTTL":"1h"}}}`,
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"}}{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"rules":[{}]}}`,
	"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: trellis.dev/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a}, spec: {action: DENY, rules: [{to: [{notPorts: [22]}]}]}}\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{from: [{princpals: [x]}], to: [{methods: [GTE], ports: [http]}]}]}\n",
	"- a\n- b\n",
	"a: [\n",
	"kind: List\nitems: [null, 1, {kind: List}]\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, creationTimestamp: 2024-01-02T03:04:05Z, generation: 9}\nspec: null\n",
	"apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\n  uid: 6e0c\n  resourceVersion: \"12\"\n  updateTimestamp: \"2024-01-02T03:04:05.123+01:00\"\n  annotations:\n    a: \"x\\ty\"\n    b: \" lead\"\n    c: |\n      two\n      lines\n",
	`{"apiVersion":"trellis.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"a","annotations":{"n":"yes","m":"\u00e9\n"}},"spec":{"rules":[{"when":[{"key":"request.headers[x]","values":[" a ","no","*"]}]}]}}`,
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
	f.Add(APIVersion, KindAuthorizationPolicy, "a", "shop", []byte(`{"action":"deny","enforcement":"AUDIT"}`))
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
// Validate, that its kind's accessor accepts it, that every enum value is
// in its one canonical spelling and that Diff finds no change.
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
	type enum struct {
		got     string
		allowed []string
	}
	var (
		err   error
		enums []enum
	)
	switch o.Kind {
	case KindMesh:
		var s MeshSpec
		s, err = MeshSpecOf(&o)
		enums = []enum{
			{s.MTLS.Mode, []string{MTLSStrict, MTLSPermissive}},
			{s.Authorization.Default, []string{AuthorizationDeny, AuthorizationAllow}},
			{s.Outbound.Mode, []string{OutboundPassthrough, OutboundBlock}},
			{s.HTTP.PathNormalization, []string{PathNormalizationStrict, PathNormalizationDecodeSlashes}},
		}
	case KindAuthorizationPolicy:
		var s AuthorizationPolicySpec
		s, err = AuthorizationPolicySpecOf(&o)
		enums = []enum{
			{s.Action, []string{ActionAllow, ActionDeny}},
			{s.Enforcement, []string{EnforcementEnforce, EnforcementAudit}},
		}
	}
	if err != nil {
		t.Fatalf("spec accessor rejects a valid object: %v", err)
	}
	for _, e := range enums {
		if !slices.Contains(e.allowed, e.got) {
			t.Fatalf("valid object holds enum value %q, want one of %q: %s", e.got, e.allowed, o.Spec)
		}
	}
	if d, err := Diff(&o, &again); err != nil || len(d) != 0 {
		t.Fatalf("Diff of a valid object with itself: got %q, %v; want no changes", d, err)
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

// TestRoundTripYAMLScalars writes values that YAML would read as something
// other than strings unless quoted, and checks they come back as written.
func TestRoundTripYAMLScalars(t *testing.T) {
	words := []string{"y", "n", "yes", "no", "on", "off", "true", "null", "1", "0x1f", "1e3", "1.0", "08"}
	labels := map[string]string{}
	var values []string
	for _, w := range words {
		labels[w] = w
		values = append(values, w)
	}
	values = append(values, "*", "*.a", "&x", "!x", "@x", "`x", "- x", "a: b", "#x", "%x", "|", ">", "'", `"`, "{", "[", "x # y", "x\ty",
		" a", "a ", "---", "...", "--- a", "\\", "é", "\U0001F600", "\u00a0", "\u2028", "\ufeff", "<<", "=", "!!str", "0o17", ".inf", ".nan",
		"+1", "1_000", "60:30", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "~", "Null", "Y", "OFF")
	annotations := map[string]string{}
	for i, v := range append(values, "a\n", "\n", "a\n ", " \n a", "\r", "a\r\n", "\t") {
		annotations[fmt.Sprintf("a%d", i)] = v
	}
	spec, err := json.Marshal(AuthorizationPolicySpec{
		Selector: Selector{MatchLabels: labels},
		Rules: []Rule{{
			From: []Source{{Principals: []string{"*", "*/sa/a", "spiffe://a/*"}}},
			To:   []Operation{{Hosts: []string{"*", "*.shop", "shop.*"}, Paths: []string{"*", "/a*", "*.json"}}},
			When: []Condition{{Key: "request.headers[x]", Values: values}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	o := Object{APIVersion: APIVersion, Kind: KindAuthorizationPolicy,
		Metadata: Metadata{Name: "a", Labels: labels, Annotations: annotations}, Spec: spec}
	if err := Validate(&o); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	j, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, o, j, "json")
	checkRoundTrip(t, o, y, "yaml")
}
