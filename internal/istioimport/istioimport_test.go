package istioimport_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/istioimport"
	"github.com/trellismesh/trellis/internal/resource"
)

var opts = istioimport.Options{TrustDomain: "trellis.local"}

func convert(t *testing.T, o istioimport.Options, in string) *istioimport.Result {
	t.Helper()
	res, err := istioimport.Convert(o, istioimport.File{Name: "istio.yaml", Data: []byte(in)})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	for i := range res.Objects {
		o := res.Objects[i]
		if err := resource.Validate(&o); err != nil {
			t.Errorf("output object %d does not validate: %v", i, err)
		}
	}
	return res
}

// ap is an Istio AuthorizationPolicy shop/p with the given spec (YAML
// flow style).
func ap(spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec: " + spec + "\n"
}

// generic parses YAML or JSON into comparable values.
func generic(t *testing.T, data string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("parse %q: %v", data, err)
	}
	return v
}

// dropped lists "field: reason" of every Dropped, for compact checks.
func dropped(res *istioimport.Result) []string {
	var out []string
	for _, d := range res.Dropped {
		out = append(out, d.Field+": "+d.Reason)
	}
	return out
}

// checkDropped checks that each of want is a prefix of the matching line
// of got, in order.
func checkDropped(t *testing.T, res *istioimport.Result, want ...string) {
	t.Helper()
	got := dropped(res)
	if len(got) != len(want) {
		t.Errorf("dropped:\n  %s\nwant %d lines starting:\n  %s", strings.Join(got, "\n  "), len(want), strings.Join(want, "\n  "))
		return
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("dropped[%d] = %q, want it to start %q", i, got[i], want[i])
		}
	}
}

func checkSpec(t *testing.T, res *istioimport.Result, i int, want string) {
	t.Helper()
	if i >= len(res.Objects) {
		t.Fatalf("got %d objects, want at least %d", len(res.Objects), i+1)
	}
	got, want2 := generic(t, string(res.Objects[i].Spec)), generic(t, want)
	if !reflect.DeepEqual(got, want2) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want2)
		t.Errorf("object %d spec:\n got %s\nwant %s", i, g, w)
	}
}

func TestAuthorizationPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    string
		want    string // the Trellis spec; "" for no output
		dropped []string
	}{
		{
			name: "principals, namespaces, operations, header conditions",
			spec: `{selector: {matchLabels: {app: catalog}}, rules: [{
				from: [{source: {principals: ["cluster.local/ns/shop/sa/web", "cluster.local/ns/ops/*", "*/sa/probe", "*"], notNamespaces: [kube-system], namespaces: ["team-*"]}}],
				to: [{operation: {methods: [GET, HEAD], notMethods: [DELETE], paths: ["/items", "/items/*", "*.css"], notPaths: ["/items/secret"], hosts: ["catalog.shop", "*.shop"], notHosts: [evil], ports: ["8080", 9090], notPorts: ["22"]}}],
				when: [{key: "request.headers[x-tenant]", values: [acme], notValues: [test]}]}]}`,
			want: `{action: ALLOW, selector: {matchLabels: {app: catalog}}, rules: [{
				from: [{principals: ["spiffe://trellis.local/ns/shop/sa/web", "spiffe://trellis.local/ns/ops/*", "*/sa/probe", "*"], namespaces: ["team-*"], notNamespaces: [kube-system]}],
				to: [{methods: [GET, HEAD], notMethods: [DELETE], paths: ["/items", "/items/*", "*.css"], notPaths: ["/items/secret"], hosts: ["catalog.shop", "*.shop"], notHosts: [evil], ports: [8080, 9090], notPorts: [22]}],
				when: [{key: "request.headers[x-tenant]", values: [acme], notValues: [test]}]}]}`,
		},
		{
			name: "service accounts become principals",
			spec: `{rules: [{from: [{source: {serviceAccounts: [shop/web], notServiceAccounts: [shop/batch]}}]}]}`,
			want: `{action: ALLOW, selector: {}, rules: [{from: [{principals: ["spiffe://trellis.local/ns/shop/sa/web"], notPrincipals: ["spiffe://trellis.local/ns/shop/sa/batch"]}]}]}`,
		},
		{
			name: "empty spec allows nothing",
			spec: `{}`,
			want: `{action: ALLOW, selector: {}}`,
		},
		{
			name: "empty rule, empty source and operation",
			spec: `{rules: [{}, {from: [{}], to: [{operation: {}}]}]}`,
			want: `{action: ALLOW, selector: {}, rules: [{}, {from: [{}], to: [{}]}]}`,
		},
		{
			name:    "ALLOW loses the source that does not convert",
			spec:    `{rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}, {source: {ipBlocks: ["10.0.0.0/8"], principals: ["cluster.local/ns/c/sa/d"]}}]}]}`,
			want:    `{action: ALLOW, selector: {}, rules: [{from: [{principals: ["spiffe://trellis.local/ns/a/sa/b"]}]}]}`,
			dropped: []string{"spec.rules[0].from[1].source.ipBlocks: Trellis authorizes by identity, not address (the source is left out, so the rule admits fewer callers)"},
		},
		{
			name: "ALLOW loses the rule when no source converts",
			spec: `{rules: [{from: [{source: {requestPrincipals: ["*"]}}]}, {to: [{operation: {paths: ["/api/{*}"]}}]}, {to: [{operation: {methods: ["GET"]}}]}]}`,
			want: `{action: ALLOW, selector: {}, rules: [{to: [{methods: [GET]}]}]}`,
			dropped: []string{
				"spec.rules[0].from[0].source.requestPrincipals: Trellis does not authenticate end users (JWT); it authorizes workload identities (no source of the rule converts, so the rule is left out)",
				`spec.rules[1].to[0].operation.paths[0]: "/api/{*}": Istio path templates`,
			},
		},
		{
			name: "ALLOW loses the rule with a condition that does not convert",
			spec: `{rules: [{from: [{source: {ipBlocks: [1.2.3.4]}}, {source: {namespaces: [a]}}], when: [{key: source.ip, values: [1.2.3.4]}]}]}`,
			want: `{action: ALLOW, selector: {}}`,
			dropped: []string{
				"spec.rules[0].from[0].source.ipBlocks: Trellis authorizes by identity, not address (the rule is left out)",
				`spec.rules[0].when[0].key: "source.ip": Trellis authorizes by identity, not address (the rule is left out)`,
			},
		},
		{
			name: "header patterns do not convert",
			spec: `{rules: [{when: [{key: "request.headers[x-v]", values: ["v1*"]}]}, {when: [{key: "request.headers[x-v]", notValues: ["*"]}]}, {when: [{key: source.namespace, values: [a]}]}]}`,
			want: `{action: ALLOW, selector: {}}`,
			dropped: []string{
				`spec.rules[0].when[0].values[0]: "v1*": Istio matches it as a pattern`,
				`spec.rules[1].when[0].notValues[0]: "*": Istio matches it as a pattern`,
				`spec.rules[2].when[0].key: "source.namespace": Trellis conditions test request headers only (request.headers[NAME]); write the namespaces as from.source.namespaces`,
			},
		},
		{
			name: "DENY loses only the field",
			spec: `{action: DENY, rules: [{from: [{source: {notPrincipals: ["cluster.local/ns/a/sa/admin"], remoteIpBlocks: [1.2.3.4]}}, {source: {ipBlocks: [5.6.7.8]}}], to: [{operation: {paths: ["/admin*"], ports: [http]}}], when: [{key: "request.headers[x]", values: [v]}, {key: "request.auth.claims[iss]", values: [z]}]}]}`,
			want: `{action: DENY, selector: {}, rules: [{from: [{notPrincipals: ["spiffe://trellis.local/ns/a/sa/admin"]}, {}], to: [{paths: ["/admin*"]}], when: [{key: "request.headers[x]", values: [v]}]}]}`,
			dropped: []string{
				"spec.rules[0].from[0].source.remoteIpBlocks: Trellis authorizes by identity, not address (left out: the DENY rule matches more)",
				"spec.rules[0].from[1].source.ipBlocks: Trellis authorizes by identity, not address (left out: the DENY rule matches more)",
				"spec.rules[0].to[0].operation.ports[0]: http is not a port number from 1 to 65535 (left out: the DENY rule matches more)",
				`spec.rules[0].when[1].key: "request.auth.claims[iss]": Trellis does not authenticate end users (JWT); it authorizes workload identities (the condition is left out: the DENY rule matches more)`,
			},
		},
		{
			name:    "principals of another trust domain",
			spec:    `{rules: [{from: [{source: {principals: ["other.org/ns/a/sa/b"]}}]}, {from: [{source: {principals: ["*.local/ns/a/sa/b"]}}]}]}`,
			want:    `{action: ALLOW, selector: {}}`,
			dropped: []string{`spec.rules[0].from[0].source.principals[0]: "other.org/ns/a/sa/b" is not in Istio trust domain cluster.local`, `spec.rules[1].from[0].source.principals[0]: "*.local/ns/a/sa/b": a suffix pattern that reaches into the trust domain`},
		},
		{
			name:    "values Trellis's validator refuses",
			spec:    `{rules: [{to: [{operation: {methods: ["*"], hosts: [good]}}, {operation: {hosts: [ok]}}]}, {from: [{source: {namespaces: [Bad_NS]}}]}]}`,
			want:    `{action: ALLOW, selector: {}, rules: [{to: [{hosts: [ok]}]}]}`,
			dropped: []string{`spec.rules[0].to[0].operation.methods[0]: "*" is not an HTTP method`, `spec.rules[1].from[0].source.namespaces[0]: "Bad_NS"`},
		},
		{
			name:    "unknown fields",
			spec:    `{rules: [{from: [{source: {principal: [x]}, extra: 1}], to: [{operation: {verbs: [GET]}}], whenever: []}]}`,
			want:    `{action: ALLOW, selector: {}}`,
			dropped: []string{"spec.rules[0].from[0].extra: unknown field (the rule is left out)", "spec.rules[0].from[0].source.principal: unknown field", "spec.rules[0].to[0].operation.verbs: unknown field", "spec.rules[0].whenever: unknown field"},
		},
		{
			name:    "CUSTOM",
			spec:    `{action: CUSTOM, provider: {name: opa}, rules: [{}]}`,
			dropped: []string{"spec.action: CUSTOM's provider is defined in Istio's MeshConfig, which import does not read; define it in the Mesh's spec.extensionProviders and write the policy with action CUSTOM (docs/policy.md, External authorization) (the resource is left out)"},
		},
		{
			name:    "AUDIT",
			spec:    `{action: AUDIT, rules: [{}]}`,
			dropped: []string{"spec.action: Istio's AUDIT only marks requests"},
		},
		{
			name:    "ALLOW with targetRef",
			spec:    `{targetRef: {kind: Gateway, name: gw}, rules: [{}]}`,
			dropped: []string{"spec.targetRef: Trellis selects workloads by service and labels, not by reference to a Kubernetes object (the policy is left out)"},
		},
		{
			name:    "DENY with targetRefs",
			spec:    `{action: DENY, targetRefs: [{kind: Gateway, name: gw}], rules: [{}]}`,
			want:    `{action: DENY, selector: {}, rules: [{}]}`,
			dropped: []string{"spec.targetRefs: Trellis selects workloads by service and labels, not by reference to a Kubernetes object (left out: the DENY policy applies more widely)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := convert(t, opts, ap(tc.spec))
			checkDropped(t, res, tc.dropped...)
			if tc.want == "" {
				if len(res.Objects) != 0 {
					t.Errorf("got %d objects, want none: %s", len(res.Objects), res.Objects[0].Spec)
				}
				return
			}
			if len(res.Objects) != 1 {
				t.Fatalf("got %d objects, want 1", len(res.Objects))
			}
			o := res.Objects[0]
			if o.APIVersion != resource.APIVersion || o.Kind != resource.KindAuthorizationPolicy || o.Metadata.Name != "p" || o.Metadata.Namespace != "shop" {
				t.Errorf("envelope %s %s, want %s AuthorizationPolicy shop/p", o.APIVersion, o.Ref(), resource.APIVersion)
			}
			checkSpec(t, res, 0, tc.want)
		})
	}
}

func TestTrustDomains(t *testing.T) {
	o := istioimport.Options{TrustDomain: "example.org", IstioTrustDomain: "corp.internal"}
	res := convert(t, o, ap(`{rules: [{from: [{source: {principals: ["corp.internal/ns/a/sa/b", "cluster.local/ns/a/sa/b"]}}]}, {from: [{source: {serviceAccounts: [a/b]}}]}]}`))
	checkSpec(t, res, 0, `{action: ALLOW, selector: {}, rules: [{from: [{principals: ["spiffe://example.org/ns/a/sa/b"]}]}]}`)
	checkDropped(t, res, `spec.rules[0].from[0].source.principals[1]: "cluster.local/ns/a/sa/b" is not in Istio trust domain corp.internal`)

	if _, err := istioimport.Convert(istioimport.Options{TrustDomain: "Not A Domain"}); err == nil {
		t.Error("Convert with a bad trust domain: no error")
	}
}

func TestRootNamespace(t *testing.T) {
	doc := func(ns, spec string) string {
		return "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: " + ns + "}\nspec: " + spec + "\n---\n"
	}
	res := convert(t, opts, doc("istio-system", `{action: DENY, rules: [{to: [{operation: {paths: ["/debug*"]}}]}]}`)+
		doc("istio-system", `{selector: {matchLabels: {app: a}}, rules: [{}]}`)+
		doc("istio-system", `{action: DENY, selector: {matchLabels: {app: a}}, rules: [{}]}`)+
		doc("trellis-system", `{rules: [{}]}`)+
		doc("mesh-root", `{rules: [{}]}`))
	checkDropped(t, res,
		"spec.selector: a selector in Istio's root namespace (istio-system) picks workloads of every namespace; a Trellis policy with a selector protects its own namespace only (the policy is left out)",
		"spec.selector: a selector in Istio's root namespace (istio-system) picks workloads of every namespace; a Trellis policy with a selector protects its own namespace only (left out: the DENY policy applies more widely)",
		"metadata.namespace: a Trellis policy in trellis-system without a selector protects the whole mesh, not one namespace (the policy is left out)",
	)
	if len(res.Objects) != 3 {
		t.Fatalf("got %d objects, want 3", len(res.Objects))
	}
	for i, ns := range []string{"trellis-system", "trellis-system", "mesh-root"} {
		if got := res.Objects[i].Metadata.Namespace; got != ns {
			t.Errorf("object %d in namespace %s, want %s", i, got, ns)
		}
	}
	checkSpec(t, res, 1, `{action: DENY, selector: {}, rules: [{}]}`)

	o := opts
	o.RootNamespace = "mesh-root"
	res = convert(t, o, doc("mesh-root", `{rules: [{}]}`))
	if len(res.Objects) != 1 || res.Objects[0].Metadata.Namespace != "trellis-system" {
		t.Errorf("--root-namespace mesh-root: got %+v, want one policy in trellis-system", res.Objects)
	}
}

func pa(ns, name, spec string) string {
	return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec + "\n---\n"
}

func TestPeerAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		meshMode string // "" for no Mesh
		dropped  []string
	}{
		{
			name:     "mesh-wide STRICT; a namespace agrees",
			in:       pa("shop", "default", `{mtls: {mode: STRICT}}`) + pa("istio-system", "default", `{mtls: {mode: STRICT}}`) + pa("ops", "inherit", `{}`),
			meshMode: resource.MTLSStrict,
		},
		{
			name:     "mesh-wide PERMISSIVE, a namespace and a port STRICT",
			in:       pa("istio-system", "default", `{selector: {}, mtls: {mode: PERMISSIVE}}`) + pa("shop", "strict", `{mtls: {mode: STRICT}}`) + pa("shop", "db", `{selector: {matchLabels: {app: db}}, portLevelMtls: {"5432": {mode: STRICT}, "8080": {mode: PERMISSIVE}}}`),
			meshMode: resource.MTLSPermissive,
			dropped: []string{
				"spec.mtls.mode: STRICT: Trellis sets the mTLS mode for the whole mesh (Mesh spec.mtls.mode), not per namespace or workload; the mesh-wide mode is PERMISSIVE, from PeerAuthentication istio-system/default (the setting is left out)",
				"spec.portLevelMtls[5432].mode: STRICT: Trellis sets the mTLS mode for the whole mesh (Mesh spec.mtls.mode), not per port",
			},
		},
		{
			name:     "mesh-wide without a mode is Istio's default, PERMISSIVE",
			in:       pa("istio-system", "default", `{}`),
			meshMode: resource.MTLSPermissive,
		},
		{
			name:    "DISABLE",
			in:      pa("istio-system", "default", `{mtls: {mode: DISABLE}}`) + pa("shop", "disabled", `{mtls: {mode: DISABLE}}`),
			dropped: []string{"spec.mtls.mode: DISABLE turns mutual TLS off", "spec.mtls.mode: DISABLE: Trellis sets the mTLS mode for the whole mesh"},
		},
		{
			name:    "a namespace without a mesh-wide mode",
			in:      pa("shop", "default", `{mtls: {mode: STRICT}}`),
			dropped: []string{"spec.mtls.mode: STRICT: Trellis sets the mTLS mode for the whole mesh (Mesh spec.mtls.mode), not per namespace or workload; no mesh-wide PeerAuthentication was converted"},
		},
		{
			name:     "two mesh-wide",
			in:       pa("istio-system", "a", `{mtls: {mode: STRICT}}`) + pa("istio-system", "b", `{mtls: {mode: PERMISSIVE}}`),
			meshMode: resource.MTLSStrict,
			dropped:  []string{": PeerAuthentication istio-system/a already sets the mesh-wide mode"},
		},
		{
			name:     "unknown fields",
			in:       pa("istio-system", "default", `{mtls: {mode: STRICT, extra: 1}, portLevelMtls: {"80": {mode: STRICT}}, other: 2}`),
			meshMode: resource.MTLSStrict,
			dropped:  []string{"spec.mtls.extra: unknown field (the setting is left out)", "spec.other: unknown field", "spec.portLevelMtls: Trellis has no per-port mTLS mode"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := convert(t, opts, tc.in)
			checkDropped(t, res, tc.dropped...)
			if tc.meshMode == "" {
				if len(res.Objects) > 0 {
					t.Errorf("got %d objects, want none", len(res.Objects))
				}
				return
			}
			if len(res.Objects) != 1 || res.Objects[0].Kind != resource.KindMesh || res.Objects[0].Metadata.Name != "default" {
				t.Fatalf("got %d objects, want the Mesh default", len(res.Objects))
			}
			checkSpec(t, res, 0, `{mtls: {mode: `+tc.meshMode+`}}`)
		})
	}
}

func TestOtherDocuments(t *testing.T) {
	res := convert(t, opts, `apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: RequestAuthentication
  metadata: {name: jwt, namespace: shop}
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: vs, namespace: shop}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: ok, namespace: shop}
  spec: {rules: [{}]}
---
- not a resource
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: shop}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: Bad_Name, namespace: shop}
`)
	if len(res.Objects) != 1 || res.Objects[0].Metadata.Name != "ok" {
		t.Errorf("got %d objects, want shop/ok", len(res.Objects))
	}
	var got []string
	for _, d := range res.Dropped {
		got = append(got, d.String())
	}
	want := []string{
		"istio.yaml: RequestAuthentication shop/jwt: kind: not converted: Trellis does not authenticate end users (JWT)",
		`istio.yaml: VirtualService shop/vs: apiVersion: not converted: "networking.istio.io/v1" is not an Istio security API`,
		"istio.yaml#2: not converted: the document is not a mapping",
		"istio.yaml: AuthorizationPolicy shop/: not converted: metadata.name is missing",
		`istio.yaml: AuthorizationPolicy shop/Bad_Name: not converted: metadata.name: "Bad_Name"`,
	}
	if len(got) != len(want) {
		t.Fatalf("dropped:\n%s\nwant %d lines", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("dropped[%d] = %q, want it to start %q", i, got[i], want[i])
		}
	}

	if _, err := istioimport.Convert(opts, istioimport.File{Name: "bad.yaml", Data: []byte("a: 1\n---\nb: [\n")}); err == nil || !strings.Contains(err.Error(), "bad.yaml#2") {
		t.Errorf("unparsable input: %v, want an error naming bad.yaml#2", err)
	}
}
