package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// policy check with a CUSTOM policy: the local decision, and the provider
// that would be asked (it cannot be simulated offline), in json and text;
// one the Mesh lacks is said to deny; a locally denied request asks none.
func TestPolicyCheckCustom(t *testing.T) {
	m := startMesh(t)
	m.mustRun(t, extAuthzMesh("127.0.0.1:9191", false)+`---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ghost, namespace: shop}
spec: {selector: {service: catalog}, action: CUSTOM, provider: {name: ghost}, rules: [{to: [{paths: [/ghost]}]}]}
`, "apply", "-f", "-")
	type custom struct {
		Policy   string `json:"policy"`
		Rule     int    `json:"rule"`
		Provider string `json:"provider"`
		Defined  bool   `json:"defined"`
	}
	check := func(args ...string) (string, []custom) {
		_, r := m.mustCheck(t, args...)
		var out struct {
			Decision string   `json:"decision"`
			Custom   []custom `json:"custom"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatal(err)
		}
		return out.Decision, out.Custom
	}
	dec, cs := check("--from", "frontend.shop", "--to", "catalog.shop", "--path", "/items")
	if want := []custom{{"shop/ext-authz", 0, "ext", true}}; dec != "ALLOW" || len(cs) != 1 || cs[0] != want[0] {
		t.Errorf("allowed locally: got %s %+v, want ALLOW and %+v", dec, cs, want)
	}
	dec, cs = check("--from", "frontend.shop", "--to", "catalog.shop", "--path", "/ghost")
	if dec != "ALLOW" || len(cs) != 2 || cs[1] != (custom{"shop/ghost", 0, "ghost", false}) {
		t.Errorf("unknown provider: got %s %+v", dec, cs)
	}
	if dec, cs = check("--from", "frontend.shop", "--to", "catalog.shop", "--method", "POST"); dec != "DENY" || len(cs) != 0 {
		t.Errorf("denied locally: got %s %+v, want DENY and no provider", dec, cs)
	}
	text := m.mustRun(t, "", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop", "--path", "/ghost")
	for _, want := range []string{
		"custom:    shop/ext-authz rule 0: provider ext would be asked; its answer cannot be simulated offline",
		"shop/ghost rule 0: provider ghost is not in the Mesh's spec.extensionProviders: the proxy denies (403)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
