package inject_test

import (
	"os"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/kube/inject"
	"github.com/trellismesh/trellis/internal/testutil"
)

var cfg = inject.Config{
	Image:       "ghcr.io/trellismesh/trellis:test",
	ControlAddr: "trellis-control.trellis-system.svc:15012",
	CAConfigMap: "trellis-ca-bundle",
	Version:     "test",
}

// Every workload kind is injected as the golden file shows; the opted-out
// one and the ConfigMap are left as written; injecting again changes
// nothing.
func TestDocumentsGolden(t *testing.T) {
	in, err := os.ReadFile("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := inject.Documents(in, "workloads.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "workloads.injected.yaml", string(out))
	again, err := inject.Documents(out, "injected.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(out) {
		t.Errorf("injecting an injected stream changed it:\n%s", again)
	}
}

// A bad annotation is an error naming the document, the object and the
// annotation, and nothing is returned.
func TestDocumentsBadAnnotations(t *testing.T) {
	pod := func(ann string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: web}, annotations: {" + ann + "}}\nspec: {containers: [{name: app, image: x}]}\n"
	}
	for _, tc := range []struct{ ann, want string }{
		{`trellis.dev/inject: "maybe"`, `annotation trellis.dev/inject: "maybe" is not true or false`},
		{`trellis.dev/app-port: "http"`, `annotation trellis.dev/app-port: "http" is not a port number`},
		{`trellis.dev/app-port: "70000"`, `annotation trellis.dev/app-port: "70000" is not a port number`},
		{`trellis.dev/protocol: "udp"`, `annotation trellis.dev/protocol: "udp" is not http, http2, grpc or tcp`},
		{`trellis.dev/exclude-inbound-ports: "22,x"`, `annotation trellis.dev/exclude-inbound-ports: "x" is not a port number`},
		{`trellis.dev/exclude-outbound-cidrs: "10.0.0.0/33"`, `annotation trellis.dev/exclude-outbound-cidrs: "10.0.0.0/33" is not a CIDR`},
		{`trellis.dev/proxy-cpu-limit: "lots"`, `annotation trellis.dev/proxy-cpu-limit: "lots" is not a Kubernetes quantity`},
		{`trellis.dev/service: "Web_1"`, `service name "Web_1"`},
	} {
		doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n" + pod(tc.ann)
		out, err := inject.Documents([]byte(doc), "f.yaml", cfg)
		if err == nil || out != nil {
			t.Errorf("%s: no error (%d bytes out)", tc.ann, len(out))
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "f.yaml#2: Pod p: ") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %q, want f.yaml#2: Pod p: ...%s", tc.ann, msg, tc.want)
		}
	}
	// No service name to be found.
	_, err := inject.Documents([]byte("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: x}]}\n"), "f.yaml", cfg)
	if err == nil || !strings.Contains(err.Error(), "set annotation trellis.dev/service") {
		t.Errorf("pod without a service name: %v", err)
	}
}
