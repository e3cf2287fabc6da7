package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
)

func TestCARotateStatusRetire(t *testing.T) {
	m := startMesh(t)
	status := func() adminapi.CAStatus {
		t.Helper()
		var st adminapi.CAStatus
		if err := json.Unmarshal([]byte(m.mustRun(t, "", "ca", "status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := status()
	if len(before.Roots) != 1 || before.Rotating {
		t.Fatalf("fresh CA: %+v, want one root, no rotation", before)
	}
	if out := m.mustRun(t, "", "ca", "status"); !strings.Contains(out, "no rotation in progress") || !strings.Contains(out, before.Roots[0].ID[:12]) {
		t.Errorf("ca status before a rotation:\n%s", out)
	}

	r := m.run(t, "", "ca", "retire-old")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, "no rotation in progress") {
		t.Errorf("retire-old without a rotation: %v, want exit 1 saying no rotation is in progress", r)
	}

	out := m.mustRun(t, "", "ca", "rotate")
	after := status()
	if len(after.Roots) != 2 || !after.Rotating || after.Issuer.ID == before.Issuer.ID {
		t.Fatalf("after ca rotate: %+v, want two roots and a new issuer", after)
	}
	for _, want := range []string{"new root " + after.Roots[1].ID[:12], "signing with intermediate " + after.Issuer.ID[:12], "trellis ca retire-old", "ca.crt"} {
		if !strings.Contains(out, want) {
			t.Errorf("ca rotate printed %q, want it to mention %q", out, want)
		}
	}
	if out := m.mustRun(t, "", "ca", "status"); !strings.Contains(out, "rotation in progress: 0/0") || !strings.Contains(out, "every proxy is done") {
		t.Errorf("ca status during a rotation without proxies:\n%s", out)
	}

	var resp adminapi.CAChangeResponse
	if err := json.Unmarshal([]byte(m.mustRun(t, "", "ca", "retire-old", "-o", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Retired) != 1 || resp.Retired[0].ID != before.Roots[0].ID || len(resp.Status.Roots) != 1 {
		t.Errorf("ca retire-old -o json: %+v, want the first root retired", resp)
	}
}

func TestCAUsageErrors(t *testing.T) {
	m := startMesh(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ca", "status", "-o", "yaml"}, "use table or json"},
		{[]string{"ca", "rotate", "-o", "table"}, "use text or json"},
		{[]string{"ca", "rotte"}, `did you mean "rotate"?`},
		{[]string{"ca", "rotate", "now"}, "argument"},
	} {
		r := m.run(t, "", tc.args...)
		if r.code != cli.ExitUser || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("trellis %s: %v, want exit 1 mentioning %q", strings.Join(tc.args, " "), r, tc.want)
		}
	}
	if st := m.mustRun(t, "", "ca", "status", "-o", "json"); strings.Contains(st, `"rotating": true`) {
		t.Errorf("a refused command rotated the CA")
	}
}
