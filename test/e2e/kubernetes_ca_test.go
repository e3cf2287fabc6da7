package e2e

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/identity"
)

// TestKubernetesCARotationAcrossReplicas: catalog's proxy is served by
// cp-a, frontend's by cp-b, and callers call catalog through frontend. A
// root rotation asked of cp-b reaches cp-a through the CA Secret: both
// replicas sign with the new intermediate and both proxies renew. cp-a's
// status counts frontend too (from cp-b's reports), and retire-old asked
// of cp-a is accepted only once both proxies are done, then reaches cp-b.
// Not one call fails.
func TestKubernetesCARotationAcrossReplicas(t *testing.T) {
	skipIfShort(t)
	m := startKubeMesh(t, true)
	a, b := m.first, m.second
	awaitSynced(t, a.env(), 1)
	awaitSynced(t, b.env(), 1)
	cl := startCallers(t, m.get)
	status := func(p *controlProcess) adminapi.CAStatus {
		t.Helper()
		r := runBinary(t, p.env(), "", "ca", "status", "-o", "json")
		var st adminapi.CAStatus
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
			t.Fatalf("trellis ca status: %v", r)
		}
		return st
	}
	awaitCond(t, 20*time.Second, "cp-a's CA status counts both proxies (frontend from cp-b's reports)", func() bool {
		return status(a).Proxies.Done == 2
	})
	before := status(a)

	if r := runBinary(t, b.env(), "", "ca", "rotate"); r.code != 0 {
		t.Fatalf("trellis ca rotate on cp-b: %v", r)
	}
	rotated := status(b)
	if rotated.Issuer.ID == before.Issuer.ID || len(rotated.Roots) != 2 {
		t.Fatalf("cp-b after the rotation: issuer %s (was %s), %d roots", rotated.Issuer.ID, before.Issuer.ID, len(rotated.Roots))
	}
	awaitCond(t, 20*time.Second, "cp-a takes cp-b's rotation", func() bool {
		st := status(a)
		return st.Issuer.ID == rotated.Issuer.ID && len(st.Roots) == 2
	})
	awaitCond(t, 30*time.Second, "both proxies renewed and trust both roots, as cp-a sees them", func() bool {
		st := status(a)
		return st.Proxies.Done == 2 && st.CanRetire
	})

	if r := runBinary(t, a.env(), "", "ca", "retire-old"); r.code != 0 {
		t.Fatalf("trellis ca retire-old on cp-a: %v", r)
	}
	awaitCond(t, 20*time.Second, "cp-b takes cp-a's retirement", func() bool {
		st := status(b)
		return len(st.Roots) == 1 && st.Issuer.ID == rotated.Issuer.ID
	})
	sec, err := m.c.Client.CoreV1().Secrets("trellis-system").Get(m.ctx, "trellis-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if roots, err := identity.ParseCertsPEM(sec.Data["ca.crt"]); err != nil || len(roots) != 1 || identity.CertID(roots[0]) != status(a).Roots[0].ID {
		t.Errorf("the Secret's ca.crt after the retirement: %d roots (%v)", len(roots), err)
	}
	time.Sleep(2 * time.Second) // calls on the new root alone
	cl.stop()
	t.Logf("%d calls through the rotation and the retirement, %d failed", cl.calls.Load(), cl.failures.Load())
	if cl.calls.Load() < 300 {
		t.Errorf("only %d calls: the callers stalled", cl.calls.Load())
	}
	if f := cl.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v); none may fail in a rotation", f, cl.calls.Load(), cl.firstErr.Load())
	}
}
