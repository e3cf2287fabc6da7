package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

type checkOut struct {
	Worst    string `json:"worst"`
	Findings []struct {
		Level, Check, Subject, Message string
	} `json:"findings"`
}

func (c checkOut) find(level, check, subjectPart string) bool {
	for _, f := range c.Findings {
		if f.Level == level && f.Check == check && strings.Contains(f.Subject+" "+f.Message, subjectPart) {
			return true
		}
	}
	return false
}

// TestCheck: a healthy mesh is all OK (exit 0); a policy selecting
// nothing is a WARN (exit 3); a proxy that never acknowledges its config
// turns STALE, a FAIL (exit 4); the unreachable control plane is exit 2.
func TestCheck(t *testing.T) {
	clearEnv(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{AckTimeout: 300 * time.Millisecond})
	m := &mesh{ControlPlane: cp, client: cp.Client(t)}
	meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", AppAddr: neverCalled})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: neverCalled})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: catalog-reads, namespace: shop}\nspec: {selector: {service: catalog}, action: ALLOW, rules: [{}]}\n")
	check := func(want int) checkOut {
		t.Helper()
		var out checkOut
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := m.run(t, "", "check", "-o", "json")
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("check -o json: %v\n%v", err, r)
			}
			if r.code == want {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("check: exit %d, want %d\n%v", r.code, want, r)
			}
			time.Sleep(100 * time.Millisecond) // proxies still syncing
		}
	}
	out := check(cli.ExitOK)
	if out.Worst != "OK" || !out.find("OK", "proxies", "2 of 2 proxies SYNCED") || !out.find("OK", "ca", "intermediate") || !out.find("OK", "control-plane", "ready") {
		t.Errorf("healthy mesh: %+v", out)
	}
	// The table form, polled like the JSON one: a proxy may be SYNCING
	// for a moment (a report, a late push) between two runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := m.run(t, "", "check")
		if r.code == cli.ExitOK && strings.Contains(r.stdout, "Worst: OK") && strings.Contains(r.stdout, "LEVEL") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("table: %v", r)
			break
		}
	}

	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: shop}\nspec: {selector: {service: catalgo}, action: ALLOW, rules: [{}]}\n")
	out = check(cli.ExitCheckWarn)
	if out.Worst != "WARN" || !out.find("WARN", "policies", "shop/typo") || out.find("WARN", "policies", "catalog-reads") {
		t.Errorf("policy selecting nothing: %+v", out)
	}

	// A proxy that takes its config and never answers.
	startStuckProxy(t, cp, "stuck-1", "billing", "pay", "127.0.0.1:16001")
	out = check(cli.ExitCheckFail)
	if out.Worst != "FAIL" || !out.find("FAIL", "proxies", "billing.pay/stuck-1") {
		t.Errorf("stale proxy: %+v", out)
	}

	r := run(t, "", "check", "--api", "http://127.0.0.1:1", "--token", "x")
	if r.code != cli.ExitInternal {
		t.Errorf("unreachable control plane: %v, want exit %d", r, cli.ExitInternal)
	}
	_ = adminapi.ProxySynced
}
