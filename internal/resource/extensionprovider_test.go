package resource

import (
	"slices"
	"testing"
)

func mustDecodeOne(t *testing.T, doc string) Object {
	t.Helper()
	objs, err := Decode([]byte(doc), "t.yaml")
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode: %v (%d objects)", err, len(objs))
	}
	return objs[0]
}

func TestMeshExtensionProviderDefaults(t *testing.T) {
	o := mustDecodeOne(t, `
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  extensionProviders:
  - name: opa
    envoyExtAuthzGrpc:
      service: opa.shop.svc
      port: 9191
      includeRequestHeadersInCheck: [Authorization, X-Tenant]
`)
	spec, err := MeshSpecOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ExtensionProviders[0].EnvoyExtAuthzGrpc
	if got, want := g.Timeout.Duration, DefaultExtAuthzTimeout; got != want {
		t.Errorf("timeout: got %s, want %s", got, want)
	}
	if got, want := g.IncludeRequestHeadersInCheck, []string{"authorization", "x-tenant"}; !slices.Equal(got, want) {
		t.Errorf("headers: got %q, want %q", got, want)
	}
	if g.FailOpen {
		t.Error("failOpen: got true, want false (fail closed by default)")
	}
}

func TestCustomPolicyValid(t *testing.T) {
	o := mustDecodeOne(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: custom
  provider: {name: opa}
  rules: [{to: [{paths: ["/admin*"]}]}]
`)
	spec, err := AuthorizationPolicySpecOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Action != ActionCustom || spec.Provider.Name != "opa" {
		t.Errorf("got action %q provider %+v, want CUSTOM opa", spec.Action, spec.Provider)
	}
}

func TestMeshTracing(t *testing.T) {
	for _, tc := range []struct {
		pct  string
		want float64
	}{{"", DefaultSamplingPercentage}, {"randomSamplingPercentage: 0.5", 0.5}, {"randomSamplingPercentage: 100", 100}, {"randomSamplingPercentage: 0", 0}} {
		o := mustDecodeOne(t, `
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  extensionProviders:
  - name: jaeger
    opentelemetry: {service: jaeger.observability, port: 4317}
  tracing: {provider: jaeger, `+tc.pct+`}
`)
		spec, err := MeshSpecOf(&o)
		if err != nil {
			t.Fatalf("%q: %v", tc.pct, err)
		}
		if got := *spec.Tracing.RandomSamplingPercentage; got != tc.want {
			t.Errorf("%q: percentage: got %v, want %v", tc.pct, got, tc.want)
		}
	}
}
