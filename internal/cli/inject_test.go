//go:build !trellis_nokube

package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil"
)

// trellis inject -f injects a file or stdin the same way, prints YAML a
// second pass leaves as it is, and refuses a bad annotation with exit 2,
// naming the document and writing nothing.
func TestInject(t *testing.T) {
	clearEnv(t)
	args := []string{"inject", "--image", "ghcr.io/trellismesh/trellis:test", "-f"}
	r := run(t, "", append(args, "testdata/inject-workloads.yaml")...)
	if r.code != cli.ExitOK || r.stderr != "" {
		t.Fatalf("inject -f FILE: %v", r)
	}
	testutil.Golden(t, "inject-workloads.injected.yaml", r.stdout)
	again := run(t, r.stdout, append(args, "-")...)
	if again.code != cli.ExitOK || again.stdout != r.stdout {
		t.Errorf("inject -f - of injected output changed it (exit %d):\n%s", again.code, again.stdout)
	}
	bad := run(t, "kind: Pod\nmetadata: {name: web, labels: {app: web}, annotations: {trellis.dev/protocol: udp}}\nspec: {containers: [{name: app, image: x}]}\n", append(args, "-")...)
	if bad.code != cli.ExitUser || bad.stdout != "" || !strings.Contains(bad.stderr, `inject: nothing written: <stdin>#1: Pod web: annotation trellis.dev/protocol: "udp" is not http, http2, grpc or tcp`) {
		t.Errorf("bad annotation: %v", bad)
	}
	if none := run(t, "", "inject"); none.code != cli.ExitUser || !strings.Contains(none.stderr, "-f is required") {
		t.Errorf("no -f: %v", none)
	}
}

// trellis install kubernetes prints the install package's manifests with
// the flags' options, and refuses zero replicas.
func TestInstallKubernetes(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "install", "kubernetes", "--image", "img:1", "--proxy-image", "proxy:1", "--replicas", "3", "--trust-domain", "corp.example")
	if r.code != cli.ExitOK {
		t.Fatalf("%v", r)
	}
	objs, err := install.Objects(install.Options{Image: "img:1", ProxyImage: "proxy:1", Replicas: 3, TrustDomain: "corp.example"})
	if err != nil {
		t.Fatal(err)
	}
	want, err := install.YAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(want) {
		t.Error("trellis install kubernetes prints other manifests than install.Objects")
	}
	for _, s := range []string{"replicas: 3", "- corp.example", "image: img:1", "- proxy:1"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("output lacks %q", s)
		}
	}
	if bad := run(t, "", "install", "kubernetes", "--replicas", "0"); bad.code != cli.ExitUser || !strings.Contains(bad.stderr, "--replicas 0") {
		t.Errorf("--replicas 0: %v", bad)
	}
}
