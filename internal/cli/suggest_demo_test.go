package cli_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
)

// On the demo mesh, whose traffic generator calls catalog and payments
// through frontend, policy suggest proposes what the demo's hand-written
// policies allow, or less: frontend calls catalog GET /items and payments
// POST /charge (the demo's policies also allow /items/*, which nobody
// called), and the canary Route sends a tenth of the catalog calls to
// catalog-v2, which shows up as its own call once one has landed there;
// and the hand-written policies allow every suggested call.
func TestSuggestOnTheDemoIsNarrowerThanItsPolicies(t *testing.T) {
	m := startDemo(t)
	api := []string{"--api", m.Control.APIURL(), "--token-file", filepath.Join(m.DataDir, controlplane.AdminTokenFile)}

	want := []string{"frontend -> catalog.shop GET /items", "frontend -> catalog-v2.shop GET /items", "frontend -> payments.shop POST /charge"}
	var calls []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := run(t, "", append(api, "policy", "suggest", "-n", "shop", "-o", "yaml")...)
		if r.code != cli.ExitOK {
			t.Fatalf("suggest: %v", r)
		}
		objs, err := resource.Decode([]byte(r.stdout), "suggest")
		if err != nil {
			t.Fatalf("suggest output: %v\n%s", err, r.stdout)
		}
		calls = nil
		for i := range objs {
			spec, err := resource.IntentSpecOf(&objs[i])
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range spec.Calls {
				calls = append(calls, spec.Client.Service+" -> "+c.Service+" "+strings.Join(c.Methods, ",")+" "+strings.Join(c.Paths, ","))
			}
		}
		if slices.Contains(calls, want[0]) && slices.Contains(calls, want[2]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("suggest on the demo after 30s:\n%s", r.stdout)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, c := range calls {
		if !slices.Contains(want, c) {
			t.Fatalf("suggested calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
		}
	}
	for _, c := range [][]string{{"catalog.shop", "GET", "/items"}, {"catalog-v2.shop", "GET", "/items"}, {"payments.shop", "POST", "/charge"}} {
		r := run(t, "", append(api, "policy", "check", "--from", "frontend.shop", "--to", c[0], "--method", c[1], "--path", c[2])...)
		if r.code != cli.ExitOK || !strings.Contains(r.stdout, "ALLOW") || !strings.Contains(r.stdout, "frontend-") {
			t.Errorf("the demo's own policies on the suggested %v: %v", c, r)
		}
	}
}
