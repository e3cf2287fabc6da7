package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

const egressPolicies = `apiVersion: trellis.dev/v1alpha1
kind: EgressPolicy
metadata: {name: payments-psp, namespace: shop}
spec:
  selector: {service: payments}
  hosts: [{name: api.psp.example, ports: [443]}, {name: "*.s3.example"}]
---
apiVersion: trellis.dev/v1alpha1
kind: EgressPolicy
metadata: {name: telemetry, namespace: trellis-system}
spec:
  principals: ["spiffe://trellis.local/ns/shop/*"]
  hosts: [{name: otel.example, ports: [4317]}]
`

// EgressPolicies through the CLI: apply and get like any kind, and
// policy check --to-host answers for hosts outside the mesh (text and
// JSON), by the policies selecting the caller or else the outbound mode.
func TestEgressPolicyCheck(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, egressPolicies, "apply", "-f", "-")
	out := m.mustRun(t, "", "get", "egresspolicies", "-A")
	for _, want := range []string{"payments-psp", "telemetry"} {
		if !strings.Contains(out, want) {
			t.Errorf("get egresspolicies: no %s in\n%s", want, out)
		}
	}
	if out := m.mustRun(t, "", "get", "egress", "payments-psp", "-n", "shop", "-o", "yaml"); !strings.Contains(out, "api.psp.example") {
		t.Errorf("get egress payments-psp -o yaml:\n%s", out)
	}

	check := func(args ...string) map[string]any {
		t.Helper()
		var res map[string]any
		out := m.mustRun(t, "", append(append([]string{"policy", "check"}, args...), "-o", "json")...)
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return res
	}
	for _, tc := range []struct {
		from, host, port, decision, policy string
	}{
		{"payments.shop", "api.psp.example", "443", "ALLOW", "shop/payments-psp"},
		{"payments.shop", "API.psp.example", "443", "ALLOW", "shop/payments-psp"},
		{"payments.shop", "api.psp.example", "80", "DENY", ""},
		{"payments.shop", "bucket.s3.example", "80", "ALLOW", "shop/payments-psp"},
		{"payments.shop", "s3.example", "443", "DENY", ""},
		{"payments.shop", "otel.example", "4317", "ALLOW", "trellis-system/telemetry"},
		{"catalog.shop", "otel.example", "4317", "ALLOW", "trellis-system/telemetry"},
		{"catalog.shop", "api.psp.example", "443", "DENY", ""},
		// An identity no proxy has: its service is unknown, so only the
		// mesh-wide policy (by principal) selects it.
		{"spiffe://trellis.local/ns/shop/sa/payments", "api.psp.example", "443", "DENY", ""},
		{"spiffe://trellis.local/ns/shop/sa/payments", "otel.example", "4317", "ALLOW", "trellis-system/telemetry"},
		// No EgressPolicy selects billing: the outbound mode (passthrough).
		{"ledger.billing", "anything.example", "443", "ALLOW", ""},
	} {
		res := check("--from", tc.from, "--to-host", tc.host, "--port", tc.port)
		if res["decision"] != tc.decision || res["policy"] != tc.policy {
			t.Errorf("%s -> %s:%s: got %v %q, want %s %q (%v)", tc.from, tc.host, tc.port, res["decision"], res["policy"], tc.decision, tc.policy, res)
		}
	}
	res := check("--from", "payments.shop", "--to-host", "evil.example", "--port", "443")
	if sel, _ := json.Marshal(res["selecting"]); string(sel) != `["shop/payments-psp","trellis-system/telemetry"]` || res["from"] != "spiffe://trellis.local/ns/shop/sa/payments" {
		t.Errorf("selecting %s, from %v", sel, res["from"])
	}

	// Once a proxy of payments registers, its identity names its service.
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "payments", Labels: map[string]string{"tier": "pay"}})
	if res := check("--from", "spiffe://trellis.local/ns/shop/sa/payments", "--to-host", "api.psp.example", "--port", "443"); res["decision"] != "ALLOW" || res["fromService"] != "payments.shop" {
		t.Errorf("registered identity: %v", res)
	}

	text := m.mustRun(t, "", "policy", "check", "--from", "payments.shop", "--to-host", "api.psp.example", "--port", "443")
	for _, want := range []string{"decision:  ALLOW", "policy:    shop/payments-psp (host api.psp.example)", "to:        api.psp.example port 443 (outside the mesh)"} {
		if !strings.Contains(text, want) {
			t.Errorf("text answer lacks %q:\n%s", want, text)
		}
	}

	// With the mesh in block, a workload no EgressPolicy selects is denied.
	m.mustRun(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {outbound: {mode: block}}\n", "apply", "-f", "-")
	if res := check("--from", "ledger.billing", "--to-host", "anything.example", "--port", "443"); res["decision"] != "DENY" || res["outboundMode"] != "block" {
		t.Errorf("outbound block: %v", res)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--from", "payments.shop", "--to-host", "api.psp.example"}, "needs --port"},
		{[]string{"--from", "payments.shop", "--to-host", "api.psp.example", "--port", "443", "--to", "catalog.shop"}, "give one of them"},
		{[]string{"--from", "payments.shop", "--to-host", "api.psp.example", "--port", "443", "--path", "/x"}, "--path does not apply"},
		{[]string{"--from", "plaintext", "--to-host", "api.psp.example", "--port", "443"}, "--from plaintext"},
		{[]string{"--from", "payments.shop", "--to-host", "bad host", "--port", "443"}, "want a host name"},
		{[]string{"--to-host", "api.psp.example", "--port", "443"}, "--from is required"},
	} {
		r := m.run(t, "", append([]string{"policy", "check"}, tc.args...)...)
		if r.code != cli.ExitUser || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: %v, want a usage error mentioning %q", tc.args, r, tc.msg)
		}
	}
}
