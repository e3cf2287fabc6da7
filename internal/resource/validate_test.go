package resource

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// decodeOne decodes a YAML document holding exactly one object.
func decodeOne(t *testing.T, doc string) Object {
	t.Helper()
	objs, err := Decode([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("Decode: got %d objects, want 1", len(objs))
	}
	return objs[0]
}

// policy is an AuthorizationPolicy shop/p with the given spec (YAML).
func policy(spec string) Object {
	return Object{APIVersion: APIVersion, Kind: KindAuthorizationPolicy,
		Metadata: Metadata{Name: "p", Namespace: "shop"}, Spec: yamlJSON(spec)}
}

// mesh is the Mesh with the given spec (YAML).
func mesh(spec string) Object {
	return Object{APIVersion: APIVersion, Kind: KindMesh, Metadata: Metadata{Name: "default"}, Spec: yamlJSON(spec)}
}

// yamlJSON converts a YAML spec to JSON the way Decode does.
func yamlJSON(spec string) json.RawMessage {
	objs, err := Decode([]byte("apiVersion: x\nkind: x\nspec: "+spec), "spec")
	if err != nil {
		panic(err)
	}
	return objs[0].Spec
}

func withMeta(o Object, f func(*Object)) Object {
	f(&o)
	return o
}

func TestValidateErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name      string
		in        Object
		field     string
		msg       string
		resource  string // checked when set
		wantCount int    // number of field errors; 0 means 1
	}{
		// Envelope.
		{name: "apiVersion missing", in: withMeta(policy("{}"), func(o *Object) { o.APIVersion = "" }), field: "apiVersion", msg: `required; set it to "trellis.dev/v1alpha1"`},
		{name: "apiVersion wrong", in: withMeta(policy("{}"), func(o *Object) { o.APIVersion = "v1" }), field: "apiVersion", msg: `must be "trellis.dev/v1alpha1", got "v1"`},
		{name: "kind missing", in: withMeta(policy("{}"), func(o *Object) { o.Kind = "" }), field: "kind", msg: "required; set it to one of Mesh, AuthorizationPolicy"},
		{name: "kind unknown", in: withMeta(policy("{}"), func(o *Object) { o.Kind = "VirtualService" }), field: "kind", msg: `unknown kind "VirtualService"; known kinds: Mesh, AuthorizationPolicy`},
		{name: "kind typo", in: withMeta(policy("{}"), func(o *Object) { o.Kind = "AuthorisationPolicy" }), field: "kind", msg: `(did you mean "AuthorizationPolicy"?)`},
		{name: "kind alias", in: withMeta(policy("{}"), func(o *Object) { o.Kind = "authz" }), field: "kind", msg: `unknown kind "authz" (did you mean "AuthorizationPolicy"?)`},
		{name: "kind case", in: withMeta(mesh("{}"), func(o *Object) { o.Kind = "mesh" }), field: "kind", msg: `(did you mean "Mesh"?)`},
		{name: "name missing", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = "" }), field: "metadata.name", msg: "required", resource: "AuthorizationPolicy shop/<unnamed>"},
		{name: "name upper case", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = "Reads" }), field: "metadata.name", msg: `"Reads" must be a DNS subdomain`},
		{name: "name underscore", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = "a_b" }), field: "metadata.name", msg: "DNS subdomain"},
		{name: "name empty part", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = "a..b" }), field: "metadata.name", msg: "DNS subdomain"},
		{name: "name ends with dash", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = "a-" }), field: "metadata.name", msg: "DNS subdomain"},
		{name: "name too long", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = strings.Repeat("a.", 127) }), field: "metadata.name", msg: "at most 253"},
		{name: "mesh name", in: withMeta(mesh("{}"), func(o *Object) { o.Metadata.Name = "prod" }), field: "metadata.name", msg: `must be "default"`, resource: "Mesh prod"},
		{name: "mesh namespace", in: withMeta(mesh("{}"), func(o *Object) { o.Metadata.Namespace = "shop" }), field: "metadata.namespace", msg: "Mesh is cluster-scoped; remove metadata.namespace", resource: "Mesh default"},
		{name: "namespace upper case", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Namespace = "Shop" }), field: "metadata.namespace", msg: `"Shop" must be a DNS label`},
		{name: "namespace with dot", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Namespace = "a.b" }), field: "metadata.namespace", msg: "DNS label"},
		{name: "namespace too long", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Namespace = long }), field: "metadata.namespace", msg: "at most 63"},
		{name: "unknown kind namespace", in: withMeta(policy("{}"), func(o *Object) { o.Kind = "VirtualService"; o.Metadata.Namespace = "A" }), field: "metadata.namespace", msg: "DNS label", wantCount: 2},
		{name: "label key", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Labels = map[string]string{"a b": "x"} }), field: "metadata.labels[a b]", msg: `invalid label key "a b"`},
		{name: "label key prefix", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Labels = map[string]string{"Example.com/x": "x"} }), field: "metadata.labels[Example.com/x]", msg: "invalid label key"},
		{name: "label key empty name", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Labels = map[string]string{"example.com/": "x"} }), field: "metadata.labels[example.com/]", msg: "invalid label key"},
		{name: "label value", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Labels = map[string]string{"tier": "-web"} }), field: "metadata.labels[tier]", msg: `invalid label value "-web"`},
		{name: "label value too long", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Labels = map[string]string{"tier": long} }), field: "metadata.labels[tier]", msg: "at most 63"},
		{name: "annotation key", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Annotations = map[string]string{"a/b/c": "x"} }), field: "metadata.annotations[a/b/c]", msg: "invalid annotation key"},
		{name: "annotation value", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Annotations = map[string]string{"a": "x\u0085"} }), field: "metadata.annotations[a]", msg: "must not contain control characters other than tab and line breaks"},
		{name: "uid", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.UID = "\x00" }), field: "metadata.uid", msg: "control characters"},
		{name: "resourceVersion", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.ResourceVersion = "1\x7f" }), field: "metadata.resourceVersion", msg: "control characters"},
		{name: "generation", in: withMeta(policy("{}"), func(o *Object) { o.Metadata.Generation = -1 }), field: "metadata.generation", msg: "must not be negative"},

		// Strict decoding of the spec.
		{name: "spec invalid JSON", in: withMeta(policy("{}"), func(o *Object) { o.Spec = json.RawMessage(`{"action":`) }), field: "spec", msg: "invalid JSON"},
		{name: "spec trailing data", in: withMeta(policy("{}"), func(o *Object) { o.Spec = json.RawMessage(`{} {}`) }), field: "spec", msg: "invalid JSON"},
		{name: "spec not a mapping", in: policy("[a]"), field: "spec", msg: "must be a mapping, got a list"},
		{name: "spec string", in: mesh("strict"), field: "spec", msg: `must be a mapping, got string "strict"`},
		{name: "unknown spec field", in: policy("{acton: DENY}"), field: "spec.acton", msg: `unknown field (did you mean "action"?)`},
		{name: "field name case", in: policy("{Action: DENY}"), field: "spec.Action", msg: `unknown field (did you mean "action"?)`},
		{name: "unknown field no suggestion", in: policy("{status: {}}"), field: "spec.status", msg: "unknown field"},
		{name: "unknown nested field", in: policy("{rules: [{from: [{princpals: [x]}]}]}"), field: "spec.rules[0].from[0].princpals", msg: `unknown field (did you mean "principals"?)`},
		{name: "unknown mesh field", in: mesh("{mtls: {mdoe: STRICT}}"), field: "spec.mtls.mdoe", msg: `(did you mean "mode"?)`},
		{name: "port name", in: policy("{rules: [{to: [{ports: [80, http]}]}]}"), field: "spec.rules[0].to[0].ports[1]", msg: `must be a number, got string "http"`},
		{name: "port zero", in: policy("{rules: [{to: [{ports: [0]}]}]}"), field: "spec.rules[0].to[0].ports[0]", msg: "from 1 to 65535, got 0"},
		{name: "port too big", in: policy(`{rules: [{to: [{notPorts: ["65536"]}]}]}`), field: "spec.rules[0].to[0].notPorts[0]", msg: "from 1 to 65535, got 65536"},
		{name: "port fraction", in: policy("{rules: [{to: [{ports: [80.5]}]}]}"), field: "spec.rules[0].to[0].ports[0]", msg: "got 80.5"},
		{name: "port list", in: policy("{rules: [{to: [{ports: 80}]}]}"), field: "spec.rules[0].to[0].ports", msg: "must be a list, got number 80"},
		{name: "action number", in: policy("{action: 5}"), field: "spec.action", msg: "must be a string, got number 5"},
		{name: "yaml boolean", in: policy("{rules: [{when: [{key: 'request.headers[x-a]', values: [yes]}]}]}"), field: "spec.rules[0].when[0].values[0]", msg: "must be a string, got boolean true (quote the value"},
		{name: "rules mapping", in: policy("{rules: {from: []}}"), field: "spec.rules", msg: "must be a list, got a mapping"},
		{name: "null list item", in: policy("{rules: [{from: [null]}]}"), field: "spec.rules[0].from[0]", msg: "must not be null"},
		{name: "null string item", in: policy("{rules: [{to: [{methods: [GET, null]}]}]}"), field: "spec.rules[0].to[0].methods[1]", msg: "must not be null"},
		{name: "selector string", in: policy("{selector: catalog}"), field: "spec.selector", msg: `must be a mapping, got string "catalog"`},
		{name: "matchLabels value type", in: policy("{selector: {matchLabels: {tier: [a]}}}"), field: "spec.selector.matchLabels[tier]", msg: "must be a string, got a list"},
		{name: "workloadTTL number", in: mesh("{certificates: {workloadTTL: 3600}}"), field: "spec.certificates.workloadTTL", msg: `must be a duration string such as "24h", got number 3600`},
		{name: "workloadTTL garbage", in: mesh("{certificates: {workloadTTL: 1 day}}"), field: "spec.certificates.workloadTTL", msg: `invalid duration "1 day"`},

		// Mesh semantics.
		{name: "mtls mode", in: mesh("{mtls: {mode: DISABLE}}"), field: "spec.mtls.mode", msg: `must be one of STRICT, PERMISSIVE (in any case), got "DISABLE"`},
		{name: "mtls mode with space", in: mesh("{mtls: {mode: ' strict'}}"), field: "spec.mtls.mode", msg: `got " strict"`},
		{name: "authorization default", in: mesh("{authorization: {default: denied}}"), field: "spec.authorization.default", msg: `must be one of deny, allow (in any case), got "denied"`},
		{name: "outbound mode", in: mesh("{outbound: {mode: drop}}"), field: "spec.outbound.mode", msg: `must be one of passthrough, block (in any case), got "drop"`},
		{name: "workloadTTL short", in: mesh("{certificates: {workloadTTL: 4m59s}}"), field: "spec.certificates.workloadTTL", msg: "must be from 5m to 720h (30 days), got 4m59s"},
		{name: "workloadTTL long", in: mesh("{certificates: {workloadTTL: 721h}}"), field: "spec.certificates.workloadTTL", msg: "must be from 5m to 720h (30 days), got 721h"},
		{name: "workloadTTL negative", in: mesh("{certificates: {workloadTTL: -1h}}"), field: "spec.certificates.workloadTTL", msg: "got -1h"},

		// External authorization.
		{name: "provider without CUSTOM", in: policy("{provider: {name: opa}}"), field: "spec.provider", msg: "only with action CUSTOM"},
		{name: "CUSTOM without provider", in: policy("{action: CUSTOM}"), field: "spec.provider", msg: "required with action CUSTOM"},
		{name: "CUSTOM provider name", in: policy("{action: custom, provider: {name: 'Opa Server'}}"), field: "spec.provider.name", msg: `"Opa Server" is not a provider name`},
		{name: "CUSTOM audit", in: policy("{action: CUSTOM, enforcement: audit, provider: {name: opa}}"), field: "spec.enforcement", msg: "cannot be in audit mode"},
		{name: "provider without kind", in: mesh("{extensionProviders: [{name: opa}]}"), field: "spec.extensionProviders[0].envoyExtAuthzGrpc", msg: "required"},
		{name: "provider without name", in: mesh("{extensionProviders: [{envoyExtAuthzGrpc: {service: opa, port: 9191}}]}"), field: "spec.extensionProviders[0].name", msg: "required"},
		{name: "provider twice", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: opa, port: 9191}}, {name: a, envoyExtAuthzGrpc: {service: opa, port: 9191}}]}"), field: "spec.extensionProviders[1].name", msg: "names must be unique"},
		{name: "provider host with port", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: 'opa:9191', port: 9191}}]}"), field: "spec.extensionProviders[0].envoyExtAuthzGrpc.service", msg: "the port goes in port"},
		{name: "provider port", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: opa}}]}"), field: "spec.extensionProviders[0].envoyExtAuthzGrpc.port", msg: "from 1 to 65535, got 0"},
		{name: "provider timeout", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: 10.0.0.1, port: 1, timeout: 2m}}]}"), field: "spec.extensionProviders[0].envoyExtAuthzGrpc.timeout", msg: "must be from 1ms to 1m, got 2m"},
		{name: "tracing provider missing", in: mesh("{tracing: {provider: otel}}"), field: "spec.tracing.provider", msg: "is not in spec.extensionProviders"},
		{name: "tracing provider kind", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: opa, port: 1}}], tracing: {provider: a}}"), field: "spec.tracing.provider", msg: "is not an opentelemetry provider"},
		{name: "tracing percentage", in: mesh("{extensionProviders: [{name: otel, opentelemetry: {service: jaeger, port: 4317}}], tracing: {provider: otel, randomSamplingPercentage: 100.5}}"), field: "spec.tracing.randomSamplingPercentage", msg: "must be from 0 to 100, got 100.5"},
		{name: "otel provider port", in: mesh("{extensionProviders: [{name: otel, opentelemetry: {service: jaeger}}]}"), field: "spec.extensionProviders[0].opentelemetry.port", msg: "from 1 to 65535"},
		{name: "provider of two kinds", in: mesh("{extensionProviders: [{name: a, opentelemetry: {service: j, port: 1}, envoyExtAuthzGrpc: {service: opa, port: 1}}]}"), field: "spec.extensionProviders[0]", msg: "one kind"},
		{name: "provider header", in: mesh("{extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: opa, port: 1, headersToUpstreamOnAllow: ['x user']}}]}"), field: "spec.extensionProviders[0].envoyExtAuthzGrpc.headersToUpstreamOnAllow[0]", msg: "is not a header name"},

		// AuthorizationPolicy semantics.
		{name: "action", in: policy("{action: permit}"), field: "spec.action", msg: `must be one of ALLOW, DENY, CUSTOM (in any case), got "permit"`},
		{name: "enforcement", in: policy("{enforcement: dryrun}"), field: "spec.enforcement", msg: `must be one of enforce, audit (in any case), got "dryrun"`},
		{name: "selector service", in: policy("{selector: {service: Catalog}}"), field: "spec.selector.service", msg: `"Catalog" must be a DNS label`},
		{name: "selector label key", in: policy("{selector: {matchLabels: {'a b': x}}}"), field: "spec.selector.matchLabels[a b]", msg: "invalid label key"},
		{name: "selector label value", in: policy("{selector: {matchLabels: {app: 'a b'}}}"), field: "spec.selector.matchLabels[app]", msg: "invalid label value"},
		{name: "principal empty", in: policy(`{rules: [{from: [{principals: [""]}]}]}`), field: "spec.rules[0].from[0].principals[0]", msg: "must not be empty"},
		{name: "principal not SPIFFE", in: policy("{rules: [{from: [{principals: [frontend]}]}]}"), field: "spec.rules[0].from[0].principals[0]", msg: `"frontend" is not a SPIFFE ID`},
		{name: "principal bad trust domain", in: policy("{rules: [{from: [{principals: ['spiffe://Trellis/ns/a']}]}]}"), field: "spec.rules[0].from[0].principals[0]", msg: "trust domain characters"},
		{name: "principal star inside", in: policy("{rules: [{from: [{principals: ['spiffe://t/ns/*/sa/a']}]}]}"), field: "spec.rules[0].from[0].principals[0]", msg: "'*' may appear only once, at the start or the end"},
		{name: "principal two stars", in: policy("{rules: [{from: [{principals: ['*a*']}]}]}"), field: "spec.rules[0].from[0].principals[0]", msg: "'*' may appear only once"},
		{name: "principal prefix not spiffe", in: policy("{rules: [{from: [{notPrincipals: ['trellis.local/*']}]}]}"), field: "spec.rules[0].from[0].notPrincipals[0]", msg: `a prefix pattern must start with "spiffe://"`},
		{name: "principal space", in: policy("{rules: [{from: [{principals: ['* a']}]}]}"), field: "spec.rules[0].from[0].principals[0]", msg: "white space"},
		{name: "namespace pattern", in: policy("{rules: [{from: [{namespaces: [Shop]}]}]}"), field: "spec.rules[0].from[0].namespaces[0]", msg: `"Shop" must be a DNS label`},
		{name: "namespace glob inside", in: policy("{rules: [{from: [{notNamespaces: ['sh*p']}]}]}"), field: "spec.rules[0].from[0].notNamespaces[0]", msg: "'*' may appear only once"},
		{name: "namespace prefix glob", in: policy("{rules: [{from: [{namespaces: ['-*']}]}]}"), field: "spec.rules[0].from[0].namespaces[0]", msg: "the part besides '*'"},
		{name: "service suffix glob", in: policy("{rules: [{from: [{services: ['*_api']}]}]}"), field: "spec.rules[0].from[0].services[0]", msg: "the part besides '*'"},
		{name: "service empty", in: policy(`{rules: [{from: [{notServices: [a, ""]}]}]}`), field: "spec.rules[0].from[0].notServices[1]", msg: "must not be empty"},
		{name: "method typo", in: policy("{rules: [{to: [{methods: [GET, GTE]}]}]}"), field: "spec.rules[0].to[0].methods[1]", msg: `"GTE" is not an HTTP method`},
		{name: "method case", in: policy("{rules: [{to: [{notMethods: [get]}]}]}"), field: "spec.rules[0].to[0].notMethods[0]", msg: `"get" is not an HTTP method (methods are upper case: "GET")`},
		{name: "method glob", in: policy("{rules: [{to: [{methods: ['*']}]}]}"), field: "spec.rules[0].to[0].methods[0]", msg: "is not an HTTP method"},
		{name: "path relative", in: policy("{rules: [{to: [{paths: [items]}]}]}"), field: "spec.rules[0].to[0].paths[0]", msg: `a path must start with "/"`},
		{name: "path prefix relative", in: policy("{rules: [{to: [{notPaths: ['items*']}]}]}"), field: "spec.rules[0].to[0].notPaths[0]", msg: `a prefix pattern must start with "/"`},
		{name: "path star inside", in: policy("{rules: [{to: [{paths: ['/items/*/reviews']}]}]}"), field: "spec.rules[0].to[0].paths[0]", msg: "'*' may appear only once"},
		{name: "path space", in: policy("{rules: [{to: [{paths: ['/a b']}]}]}"), field: "spec.rules[0].to[0].paths[0]", msg: "white space"},
		{name: "host empty", in: policy(`{rules: [{to: [{hosts: [""]}]}]}`), field: "spec.rules[0].to[0].hosts[0]", msg: "must not be empty"},
		{name: "host glob", in: policy("{rules: [{to: [{notHosts: ['*.a.*']}]}]}"), field: "spec.rules[0].to[0].notHosts[0]", msg: "'*' may appear only once"},
		{name: "host space", in: policy("{rules: [{to: [{hosts: ['a b']}]}]}"), field: "spec.rules[0].to[0].hosts[0]", msg: "white space"},
		{name: "condition key missing", in: policy("{rules: [{when: [{values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: "required; write request.headers[NAME]"},
		{name: "claim key form", in: policy("{rules: [{when: [{key: \"request.auth.claims[]\", values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: `write request.auth.claims[NAME] with one claim name`},
		{name: "condition key form", in: policy("{rules: [{when: [{key: source.ip, values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: `unsupported key "source.ip": the supported forms are request.headers[NAME] and request.auth.claims[NAME]`},
		{name: "condition key unclosed", in: policy("{rules: [{when: [{key: 'request.headers[x', values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: "unsupported key"},
		{name: "condition header name", in: policy("{rules: [{when: [{key: 'request.headers[x y]', values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: `header name "x y" is not a valid HTTP header name`},
		{name: "condition header name empty", in: policy("{rules: [{when: [{key: 'request.headers[]', values: [a]}]}]}"), field: "spec.rules[0].when[0].key", msg: `header name ""`},
		{name: "condition no values", in: policy("{rules: [{when: [{key: 'request.headers[x]'}]}]}"), field: "spec.rules[0].when[0].values", msg: "required unless notValues is set"},
		{name: "condition empty lists", in: policy("{rules: [{when: [{key: 'request.headers[x]', values: [], notValues: []}]}]}"), field: "spec.rules[0].when[0].values", msg: "required unless notValues is set"},
		{name: "condition empty value", in: policy(`{rules: [{when: [{key: 'request.headers[x]', notValues: [""]}]}]}`), field: "spec.rules[0].when[0].notValues[0]", msg: "must not be empty"},
		{name: "condition control value", in: policy(`{rules: [{when: [{key: 'request.headers[x]', values: ["a\nb"]}]}]}`), field: "spec.rules[0].when[0].values[0]", msg: "control characters"},
		{name: "second rule", in: policy("{rules: [{}, {to: [{methods: [GET]}, {methods: [GTE]}]}]}"), field: "spec.rules[1].to[1].methods[0]", msg: "is not an HTTP method"},
		// A value that failed to decode is not reported again by later checks.
		{name: "no follow-up error", in: policy("{rules: [{when: [{key: 'request.headers[x]', notValues: 5}]}]}"), field: "spec.rules[0].when[0].notValues", msg: "must be a list"},
		{name: "no follow-up enum error", in: policy("{action: [ALLOW]}"), field: "spec.action", msg: "must be a string, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.in
			err := Validate(&o)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate: got %v, want a *ValidationError", err)
			}
			want := max(tt.wantCount, 1)
			if len(ve.Errors) != want {
				t.Errorf("got %d errors, want %d:\n%v", len(ve.Errors), want, err)
			}
			var found bool
			for _, fe := range ve.Errors {
				if fe.Field == tt.field && strings.Contains(fe.Message, tt.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("got errors:\n%v\nwant field %q with message containing %q", err, tt.field, tt.msg)
			}
			if tt.resource != "" && ve.Resource != tt.resource {
				t.Errorf("got resource %q, want %q", ve.Resource, tt.resource)
			}
			if string(o.Spec) != string(tt.in.Spec) || o.Metadata.Namespace != tt.in.Metadata.Namespace {
				t.Errorf("Validate changed an invalid object: got spec %s namespace %q", o.Spec, o.Metadata.Namespace)
			}
		})
	}
}

func TestValidateCollectsAllErrors(t *testing.T) {
	o := decodeOne(t, `
apiVersion: trellis.dev/v1
kind: AuthorizationPolicy
metadata: {name: Bad, namespace: shop}
spec:
  action: permit
  rules:
  - from: [{principals: [frontend], namespacs: [shop]}]
    to: [{methods: [GET, GTE], ports: [http]}]
`)
	err := Validate(&o)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate: got %v, want a *ValidationError", err)
	}
	var got []string
	for _, fe := range ve.Errors {
		got = append(got, fe.Field)
	}
	want := []string{
		"apiVersion",
		"metadata.name",
		"spec.rules[0].from[0].namespacs",
		"spec.rules[0].to[0].ports[0]",
		"spec.action",
		"spec.rules[0].from[0].principals[0]",
		"spec.rules[0].to[0].methods[1]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got fields\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantLine := `test.yaml#1: AuthorizationPolicy shop/Bad: spec.rules[0].to[0].methods[1]: "GTE" is not an HTTP method`
	if !strings.Contains(err.Error(), wantLine) {
		t.Errorf("got error\n%v\nwant a line starting %q", err, wantLine)
	}
	if got, want := strings.Count(err.Error(), "\n")+1, len(want); got != want {
		t.Errorf("got %d lines, want %d", got, want)
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   Object
	}{
		{"no spec", policy("null")},
		{"empty spec", policy("{}")},
		{"empty rules", policy("{rules: []}")},
		{"empty rule", policy("{rules: [{}]}")},
		{"empty entries", policy("{rules: [{from: [{}], to: [{}], when: []}]}")},
		{"null fields", policy("{selector: null, action: null, rules: [{from: null}]}")},
		{"deny audit", policy("{action: DENY, enforcement: audit}")},
		{"principal forms", policy("{rules: [{from: [{principals: ['*', 'spiffe://trellis.local/ns/shop/*', '*/sa/frontend', 'spiffe://trellis.local/ns/shop/sa/frontend', 'spiffe://trellis.local']}]}]}")},
		{"name forms", policy("{rules: [{from: [{namespaces: ['*', shop, 'team-*', '*-prod'], notServices: [catalog, 'cat*']}]}]}")},
		{"operation forms", policy("{rules: [{to: [{ports: [80, '8080'], notPorts: [65535], methods: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH], paths: ['/', '/items/*', '*.json', '*'], hosts: ['*.example.com', 'example.com:8080', 'api.*', '*']}]}]}")},
		{"conditions", policy("{rules: [{when: [{key: 'request.headers[X-Tenant_ID]', values: ['a b', '*']}, {key: 'request.headers[x]', notValues: [b]}]}]}")},
		{"selector", policy("{selector: {service: catalog, matchLabels: {app.kubernetes.io/name: catalog, tier: ''}}}")},
		{"mesh", mesh("{mtls: {mode: PERMISSIVE}, authorization: {default: allow}, certificates: {workloadTTL: 720h}}")},
		{"mesh min ttl", mesh("{certificates: {workloadTTL: 5m}}")},
		{"labels", withMeta(policy("{}"), func(o *Object) {
			o.Metadata.Labels = map[string]string{"example.com/team": "Shop_1.a", "x": ""}
			o.Metadata.Annotations = map[string]string{"trellis.dev/note": "anything at all\n"}
		})},
		{"long name", withMeta(policy("{}"), func(o *Object) { o.Metadata.Name = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.in
			if err := Validate(&o); err != nil {
				t.Fatalf("Validate: got %v, want nil", err)
			}
		})
	}
}

func TestValidateCanonical(t *testing.T) {
	tests := []struct {
		name      string
		in        Object
		namespace string
		spec      string
	}{
		{
			name: "mesh defaults",
			in:   mesh("null"),
			spec: `{"mtls":{"mode":"STRICT"},"authorization":{"default":"deny"},"certificates":{"workloadTTL":"24h"},"outbound":{"mode":"passthrough"},"http":{"pathNormalization":"strict"}}`,
		},
		{
			name: "mesh partial",
			in:   mesh("{certificates: {workloadTTL: 90m}, mtls: {mode: PERMISSIVE}}"),
			spec: `{"mtls":{"mode":"PERMISSIVE"},"authorization":{"default":"deny"},"certificates":{"workloadTTL":"1h30m"},"outbound":{"mode":"passthrough"},"http":{"pathNormalization":"strict"}}`,
		},
		{
			name: "mesh zero ttl means default",
			in:   mesh("{certificates: {workloadTTL: 0s}}"),
			spec: `{"mtls":{"mode":"STRICT"},"authorization":{"default":"deny"},"certificates":{"workloadTTL":"24h"},"outbound":{"mode":"passthrough"},"http":{"pathNormalization":"strict"}}`,
		},
		{
			name:      "policy defaults and namespace",
			in:        withMeta(policy("{}"), func(o *Object) { o.Metadata.Namespace = "" }),
			namespace: "default",
			spec:      `{"selector":{},"action":"ALLOW","enforcement":"enforce"}`,
		},
		{
			name:      "policy fields in schema order",
			in:        policy(`{rules: [{when: [{notValues: [b], key: 'request.headers[x]'}], to: [{paths: ['/a'], ports: ['8080', 80]}], from: [{services: [a], principals: ['*']}]}], enforcement: audit, action: DENY, selector: {matchLabels: {b: '1', a: '2'}, service: catalog}}`),
			namespace: "shop",
			spec:      `{"selector":{"service":"catalog","matchLabels":{"a":"2","b":"1"}},"action":"DENY","enforcement":"audit","rules":[{"from":[{"principals":["*"],"services":["a"]}],"to":[{"ports":[8080,80],"paths":["/a"]}],"when":[{"key":"request.headers[x]","notValues":["b"]}]}]}`,
		},
		{
			name:      "empty lists dropped",
			in:        policy("{rules: [], selector: {matchLabels: {}}}"),
			namespace: "shop",
			spec:      `{"selector":{},"action":"ALLOW","enforcement":"enforce"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.in
			if err := Validate(&o); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := string(o.Spec); got != tt.spec {
				t.Errorf("got spec\n%s\nwant\n%s", got, tt.spec)
			}
			if got := o.Metadata.Namespace; got != tt.namespace {
				t.Errorf("got namespace %q, want %q", got, tt.namespace)
			}
			again := o
			if err := Validate(&again); err != nil {
				t.Fatalf("second Validate: %v", err)
			}
			if got, want := string(again.Spec), string(o.Spec); got != want {
				t.Errorf("second Validate: got spec %s, want %s", got, want)
			}
		})
	}
}

// TestEnumCase checks that every enum value is accepted in any case and
// stored and read back in its one canonical spelling.
func TestEnumCase(t *testing.T) {
	meshField := func(f func(MeshSpec) string) func(*Object) (string, error) {
		return func(o *Object) (string, error) {
			s, err := MeshSpecOf(o)
			return f(s), err
		}
	}
	policyField := func(f func(AuthorizationPolicySpec) string) func(*Object) (string, error) {
		return func(o *Object) (string, error) {
			s, err := AuthorizationPolicySpecOf(o)
			return f(s), err
		}
	}
	mtls := meshField(func(s MeshSpec) string { return s.MTLS.Mode })
	def := meshField(func(s MeshSpec) string { return s.Authorization.Default })
	outbound := meshField(func(s MeshSpec) string { return s.Outbound.Mode })
	paths := meshField(func(s MeshSpec) string { return s.HTTP.PathNormalization })
	action := policyField(func(s AuthorizationPolicySpec) string { return s.Action })
	enforcement := policyField(func(s AuthorizationPolicySpec) string { return s.Enforcement })
	tests := []struct {
		in    Object
		field func(*Object) (string, error)
		want  string
	}{
		{mesh("{mtls: {mode: strict}}"), mtls, MTLSStrict},
		{mesh("{mtls: {mode: Permissive}}"), mtls, MTLSPermissive},
		{mesh("{mtls: {mode: PERMISSIVE}}"), mtls, MTLSPermissive},
		{mesh("{authorization: {default: DENY}}"), def, AuthorizationDeny},
		{mesh("{authorization: {default: Allow}}"), def, AuthorizationAllow},
		{mesh("{authorization: {default: allow}}"), def, AuthorizationAllow},
		{mesh("{outbound: {mode: BLOCK}}"), outbound, OutboundBlock},
		{mesh("{outbound: {mode: PassThrough}}"), outbound, OutboundPassthrough},
		{mesh("{http: {pathNormalization: DECODESLASHES}}"), paths, PathNormalizationDecodeSlashes},
		{mesh("{http: {pathNormalization: Strict}}"), paths, PathNormalizationStrict},
		{policy("{action: allow}"), action, ActionAllow},
		{policy("{action: deny}"), action, ActionDeny},
		{policy("{action: Deny}"), action, ActionDeny},
		{policy("{action: DENY}"), action, ActionDeny},
		{policy("{enforcement: AUDIT}"), enforcement, EnforcementAudit},
		{policy("{enforcement: Enforce}"), enforcement, EnforcementEnforce},
	}
	for _, tt := range tests {
		t.Run(string(tt.in.Spec), func(t *testing.T) {
			o := tt.in
			got, err := tt.field(&o)
			if err != nil || got != tt.want {
				t.Fatalf("spec accessor: got %q, %v; want %q", got, err, tt.want)
			}
			if err := Validate(&o); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !strings.Contains(string(o.Spec), `"`+tt.want+`"`) {
				t.Errorf("stored spec %s: want it to hold %q", o.Spec, tt.want)
			}
			if got, err := tt.field(&o); err != nil || got != tt.want {
				t.Errorf("after Validate: got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	if err := Validate(nil); err == nil {
		t.Errorf("Validate(nil): got nil, want an error")
	}
}

func TestDefaultMesh(t *testing.T) {
	o := DefaultMesh()
	if got, want := o.Ref(), "Mesh default"; got != want {
		t.Errorf("got Ref %q, want %q", got, want)
	}
	before := string(o.Spec)
	if err := Validate(&o); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if got := string(o.Spec); got != before {
		t.Errorf("DefaultMesh is not canonical: got %s after Validate, want %s", got, before)
	}
	spec, err := MeshSpecOf(&o)
	if err != nil {
		t.Fatalf("MeshSpecOf: %v", err)
	}
	want := MeshSpec{
		MTLS:          MeshMTLS{Mode: MTLSStrict},
		Authorization: MeshAuthorization{Default: AuthorizationDeny},
		Certificates:  MeshCertificates{WorkloadTTL: Duration{DefaultWorkloadTTL}},
		Outbound:      MeshOutbound{Mode: OutboundPassthrough},
		HTTP:          MeshHTTP{PathNormalization: PathNormalizationStrict},
	}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("got %+v, want %+v", spec, want)
	}
}

func TestSpecOf(t *testing.T) {
	p := policy("{selector: {service: catalog}, rules: [{to: [{ports: ['8080']}]}]}")
	spec, err := AuthorizationPolicySpecOf(&p)
	if err != nil {
		t.Fatalf("AuthorizationPolicySpecOf: %v", err)
	}
	if spec.Action != ActionAllow || spec.Enforcement != EnforcementEnforce || spec.Selector.Service != "catalog" {
		t.Errorf("got %+v, want defaults applied", spec)
	}
	if got := spec.Rules[0].To[0].Ports; len(got) != 1 || got[0] != 8080 {
		t.Errorf("got ports %v, want [8080]", got)
	}

	bad := policy("{action: permit}")
	bad.Source = "p.yaml#3"
	_, err = AuthorizationPolicySpecOf(&bad)
	if got, want := errString(err), `p.yaml#3: AuthorizationPolicy shop/p: spec.action: must be one of ALLOW, DENY, CUSTOM (in any case), got "permit"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	m := mesh("{}")
	if _, err := AuthorizationPolicySpecOf(&m); err == nil || !strings.Contains(err.Error(), "Mesh default is not an AuthorizationPolicy") {
		t.Errorf("AuthorizationPolicySpecOf(Mesh): got %v, want a kind error", err)
	}
	if _, err := MeshSpecOf(&p); err == nil || !strings.Contains(err.Error(), "AuthorizationPolicy shop/p is not a Mesh") {
		t.Errorf("MeshSpecOf(AuthorizationPolicy): got %v, want a kind error", err)
	}
	badMesh := mesh("{mtls: {mode: OFF}}")
	if _, err := MeshSpecOf(&badMesh); err == nil || !strings.Contains(err.Error(), "spec.mtls.mode") {
		t.Errorf("MeshSpecOf: got %v, want a spec.mtls.mode error", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
