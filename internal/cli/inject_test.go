//go:build !trellis_nokube

package cli_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
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
