package istioimport_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/trellismesh/trellis/internal/istioimport"
	"github.com/trellismesh/trellis/internal/resource"
)

var fuzzSeeds = []string{
	"",
	ap(`{selector: {matchLabels: {app: catalog}}, rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/web", "*"], namespaces: ["a*"], ipBlocks: [1.2.3.4]}}], to: [{operation: {methods: [GET], paths: ["/x/*", "/{**}"], ports: ["80", 0, x]}}], when: [{key: "request.headers[x-a]", values: [b, "c*"]}, {key: source.ip, values: [d]}]}]}`),
	ap(`{action: DENY, rules: [{from: [{source: {notPrincipals: ["*/sa/x"], serviceAccounts: ["a/b", "c"]}}], to: [{operation: {notHosts: ["*.x"], notPorts: [22]}}]}, null, 3]}`),
	ap(`{action: CUSTOM, provider: {name: x}}`),
	ap(`{action: 7, rules: {}}`),
	ap(`{targetRefs: [{}], selector: {matchLabels: {"a/b/c": "!"}}}`),
	pa("istio-system", "default", `{mtls: {mode: STRICT}}`) + pa("shop", "s", `{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {"80": {mode: DISABLE}, x: 1}}`),
	pa("istio-system", "a", `{mtls: {mode: DISABLE}}`) + pa("istio-system", "b", `{mtls: null}`),
	"apiVersion: v1\nkind: List\nitems: [1, {apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: a}, spec: []}]\n",
	`{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"j","namespace":"istio-system"},"spec":{"rules":[{"to":[{"operation":{"ports":[8080,"65536"]}}]}]}}`,
}

// FuzzConvert checks that no input makes Convert panic or produce an
// object Trellis's validator refuses, that the conversion is
// deterministic, and that the YAML written for it reads back, with
// resource.Decode as trellis apply reads it, as the same objects.
func FuzzConvert(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := istioimport.File{Name: "fuzz.yaml", Data: data}
		res, err := istioimport.Convert(opts, in)
		if err != nil {
			return
		}
		again, err := istioimport.Convert(opts, in)
		if err != nil || !reflect.DeepEqual(res, again) {
			t.Fatalf("second Convert differs: %v", err)
		}
		for _, d := range res.Dropped {
			if d.Source == "" || d.Reason == "" {
				t.Fatalf("dropped entry without source or reason: %#v", d)
			}
		}
		for i := range res.Objects {
			o := res.Objects[i]
			if err := resource.Validate(&o); err != nil {
				t.Fatalf("output object %d does not validate: %v", i, err)
			}
		}
		var buf bytes.Buffer
		if err := istioimport.WriteYAML(&buf, res.Objects); err != nil {
			t.Fatal(err)
		}
		if len(res.Objects) == 0 {
			return
		}
		back, err := resource.Decode(buf.Bytes(), "out.yaml")
		if err != nil {
			t.Fatalf("output does not decode: %v\n%s", err, buf.Bytes())
		}
		if len(back) != len(res.Objects) {
			t.Fatalf("output decodes to %d objects, want %d", len(back), len(res.Objects))
		}
		for i := range back {
			back[i].Source = ""
			if !sameJSON(t, back[i], res.Objects[i]) {
				t.Fatalf("object %d reads back as %+v, want %+v", i, back[i], res.Objects[i])
			}
		}
	})
}

func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	var ga, gb any
	for _, p := range []struct {
		v   any
		out *any
	}{{a, &ga}, {b, &gb}} {
		data, err := json.Marshal(p.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, p.out); err != nil {
			t.Fatal(err)
		}
	}
	return reflect.DeepEqual(ga, gb)
}
