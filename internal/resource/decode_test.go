package resource

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // Source + " " + Ref() of each object
	}{
		{name: "empty input", in: ""},
		{name: "only comments and markers", in: "# nothing\n---\n# still nothing\n---\n...\n"},
		{
			name: "multi-document YAML",
			in: `# policies for the shop
---
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
---
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: a
  namespace: shop
spec: {action: DENY}
...
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: b}
`,
			want: []string{"f#1 Mesh default", "f#2 AuthorizationPolicy shop/a", "f#3 AuthorizationPolicy default/b"},
		},
		{
			name: "document on the marker line",
			in:   "--- {apiVersion: trellis.dev/v1alpha1, kind: Mesh, metadata: {name: default}}\n--- # comment\napiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: x}\n",
			want: []string{"f#1 Mesh default", "f#2 Mesh x"},
		},
		{
			name: "CRLF line endings and BOM",
			in:   "\xef\xbb\xbfapiVersion: trellis.dev/v1alpha1\r\nkind: Mesh\r\nmetadata: {name: default}\r\n---\r\napiVersion: trellis.dev/v1alpha1\r\nkind: Mesh\r\nmetadata: {name: two}\r\n",
			want: []string{"f#1 Mesh default", "f#2 Mesh two"},
		},
		{
			name: "directive",
			in:   "%YAML 1.1\n---\napiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n",
			want: []string{"f#1 Mesh default"},
		},
		{
			name: "anchors and aliases",
			in:   "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  rules:\n  - from: &ops [{namespaces: [ops]}]\n    to: [{methods: [GET]}]\n  - from: *ops\n    to: [{methods: [POST]}]\n",
			want: []string{"f#1 AuthorizationPolicy default/a"},
		},
		{
			name: "JSON object",
			in:   "{\n\t\"apiVersion\": \"trellis.dev/v1alpha1\",\n\t\"kind\": \"AuthorizationPolicy\",\n\t\"metadata\": {\"name\": \"a\", \"namespace\": \"shop\"},\n\t\"spec\": {\"rules\": []}\n}\n",
			want: []string{"f#1 AuthorizationPolicy shop/a"},
		},
		{
			name: "JSON stream",
			in:   `{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"}}` + "\n" + `{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"b"}}`,
			want: []string{"f#1 Mesh default", "f#2 Mesh b"},
		},
		{
			name: "JSON documents between markers",
			in:   `{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"}}` + "\n---\n" + `{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"b"}}`,
			want: []string{"f#1 Mesh default", "f#2 Mesh b"},
		},
		{
			name: "YAML flow mapping",
			in:   `{apiVersion: trellis.dev/v1alpha1, kind: Mesh, metadata: {name: default}}`,
			want: []string{"f#1 Mesh default"},
		},
		{
			name: "List",
			in: `apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: trellis.dev/v1alpha1
  kind: Mesh
  metadata: {name: default}
- apiVersion: trellis.dev/v1alpha1
  kind: AuthorizationPolicy
  metadata: {name: a, namespace: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: c, namespace: shop}
`,
			want: []string{"f#1.items[0] Mesh default", "f#1.items[1] AuthorizationPolicy shop/a", "f#2 AuthorizationPolicy shop/c"},
		},
		{name: "empty List", in: "apiVersion: v1\nkind: List\nitems: []\n"},
		{
			name: "server fields",
			in:   "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, uid: u, resourceVersion: '7', generation: 2, creationTimestamp: 2024-01-02T03:04:05Z, labels: {a: b}}\n",
			want: []string{"f#1 Mesh default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in), "f")
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.Source+" "+o.Ref())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDecodeFields(t *testing.T) {
	objs, err := Decode([]byte(`apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: a
  namespace: shop
  labels: {team: web}
  generation: 3
  creationTimestamp: "2024-01-02T03:04:05Z"
spec:
  rules:
  - to: [{ports: [8080]}]
`), "f")
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	o := objs[0]
	if got, want := string(o.Spec), `{"rules":[{"to":[{"ports":[8080]}]}]}`; got != want {
		t.Errorf("got spec %s, want %s", got, want)
	}
	if o.Metadata.Labels["team"] != "web" || o.Metadata.Generation != 3 {
		t.Errorf("got metadata %+v, want labels and generation set", o.Metadata)
	}
	if ts := o.Metadata.CreationTimestamp; ts == nil || ts.Year() != 2024 || ts.Second() != 5 {
		t.Errorf("got creationTimestamp %v, want 2024-01-02T03:04:05Z", ts)
	}
}

func TestDecodeErrors(t *testing.T) {
	const ok = "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n"
	tests := []struct {
		name string
		in   string
		want []string // lines of the error, each a substring of one line
	}{
		{name: "scalar", in: "hello\n", want: []string{"f#1: the document is a string, not a mapping; a resource is a mapping with apiVersion, kind, metadata and spec"}},
		{name: "list", in: ok + "---\n- a\n- b\n", want: []string{"f#2: the document is a list, not a mapping"}},
		{name: "JSON array", in: `[{"kind": "Mesh"}]`, want: []string{"f#1: the document is a list"}},
		{name: "no apiVersion", in: "kind: Mesh\nmetadata: {name: default}\n", want: []string{`f#1: Mesh default: apiVersion: required; set it to "trellis.dev/v1alpha1"`}},
		{name: "no kind", in: "apiVersion: trellis.dev/v1alpha1\nmetadata: {name: x}\n", want: []string{"f#1: x: kind: required; set it to one of Mesh, AuthorizationPolicy"}},
		{name: "nothing", in: "a: 1\n", want: []string{"f#1: a: unknown field", "f#1: apiVersion: required", "f#1: kind: required"}},
		{name: "kind not a string", in: "apiVersion: trellis.dev/v1alpha1\nkind: [Mesh]\n", want: []string{"f#1: kind: must be a string, got a list"}},
		{name: "unknown top-level field", in: ok + "sepc: {}\n", want: []string{`f#1: Mesh default: sepc: unknown field (did you mean "spec"?)`}},
		{name: "unknown metadata field", in: "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespce: shop}\n", want: []string{`f#1: AuthorizationPolicy default/a: metadata.namespce: unknown field (did you mean "namespace"?)`}},
		{name: "metadata not a mapping", in: "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: default\n", want: []string{`metadata: must be a mapping, got string "default"`}},
		{name: "name not a string", in: "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: 1}\n", want: []string{"metadata.name: must be a string, got number 1 (quote the value in YAML"}},
		{name: "label not a string", in: "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, labels: {a: null}}\n", want: []string{"metadata.labels[a]: must not be null"}},
		{name: "bad timestamp", in: "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, creationTimestamp: yesterday}\n", want: []string{"metadata.creationTimestamp: must be an RFC 3339 timestamp"}},
		{name: "bad generation", in: "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default, generation: 1.5}\n", want: []string{"metadata.generation: must be an integer in range, got 1.5"}},
		{name: "invalid YAML line in file", in: ok + "---\n" + ok + "---\napiVersion: trellis.dev/v1alpha1\nkind: [\n", want: []string{"f#3: invalid YAML: line 10: "}},
		{name: "duplicate key", in: ok + "---\nkind: Mesh\nkind: Mesh\n", want: []string{`f#2: invalid YAML: line 6: key "kind" already set in map`}},
		{name: "invalid JSON", in: "{\"apiVersion\": \"trellis.dev/v1alpha1\",\n \"kind\": }", want: []string{"f#1: invalid JSON at line 2, column 10: invalid character '}'"}},
		{name: "truncated JSON", in: `{"apiVersion": "x"`, want: []string{"f#1: invalid JSON: unexpected end of input"}},
		{name: "JSON stream error after a good object", in: `{"apiVersion":"trellis.dev/v1alpha1","kind":"Mesh","metadata":{"name":"default"}}{"kind":`, want: []string{"f#2: invalid JSON"}},
		{name: "every bad document", in: "a\n---\n" + ok + "---\n[]\n", want: []string{"f#1: the document is a string", "f#3: the document is a list"}},
		{name: "List item not a mapping", in: "apiVersion: v1\nkind: List\nitems: [a]\n", want: []string{"f#1.items[0]: the document is a string"}},
		{name: "List item invalid", in: "apiVersion: v1\nkind: List\nitems: [{kind: Mesh}, {apiVersion: x}]\n", want: []string{"f#1.items[0]: Mesh <unnamed>: apiVersion: required", "f#1.items[1]: kind: required"}},
		{name: "List item null", in: "apiVersion: v1\nkind: List\nitems: [null]\n", want: []string{"f#1: List: items[0]: must not be null"}},
		{name: "List in List", in: "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n", want: []string{"f#1.items[0]: kind: a List inside a List is not supported"}},
		{name: "List items not a list", in: "apiVersion: v1\nkind: List\nitems: {a: b}\n", want: []string{"f#1: List: items: must be a list, got a mapping"}},
		{name: "List unknown field", in: "apiVersion: v1\nkind: List\nitem: []\n", want: []string{`f#1: List: item: unknown field (did you mean "items"?)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in), "f")
			if err == nil {
				t.Fatalf("Decode: got %d objects and no error, want an error", len(objs))
			}
			if objs != nil {
				t.Errorf("Decode: got %d objects with the error, want none", len(objs))
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d lines, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i := range min(len(lines), len(tt.want)) {
				if !strings.Contains(lines[i], tt.want[i]) {
					t.Errorf("line %d: got %q, want it to contain %q", i, lines[i], tt.want[i])
				}
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("got %T, want a *ValidationError inside", err)
			}
		})
	}
}
