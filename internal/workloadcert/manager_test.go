package workloadcert_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/workloadcert"
)

// A certificate manager given only the first ca.crt follows a rotation: a
// config naming the new issuer makes it renew at once (with its old
// certificate), and after the old root is retired it still renews, trusting
// the control plane by the root the config brought.
func TestManagerFollowsRotation(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	api := cp.Client(t)
	ctx := context.Background()
	tok, err := api.CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	firstRoots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(firstRoots[0])
	m := workloadcert.New(spiffeid.RequireFromString(tok.Info.SPIFFEID), cp.GRPCAddr(), pool, tok.Token, testutil.Logger(t), nil)
	if err := m.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	rot, err := api.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newIssuer := rot.Status.Issuer.ID
	if m.Issuer() == newIssuer {
		t.Fatalf("issuer is the new one before any renewal")
	}
	both, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	m.FollowCA(both, newIssuer)
	testutil.Eventually(t, "renewal from the new intermediate", func() bool { return m.Issuer() == newIssuer && m.Renewals() == 1 })
	if _, err := both[1].Verify(x509.VerifyOptions{Roots: m.ControlRoots()}); err != nil {
		t.Errorf("the new root is not among the control plane's roots: %v", err)
	}

	if _, err := api.RetireOldCA(ctx); err != nil {
		t.Fatal(err)
	}
	// The next config carries only the new root: the retired one is no
	// longer trusted for the control plane, whatever --ca-file held.
	m.FollowCA(both[1:], newIssuer)
	if _, err := both[0].Verify(x509.VerifyOptions{Roots: m.ControlRoots()}); err == nil {
		t.Error("the retired root is still trusted for the control plane")
	}
	m.RenewNow()
	testutil.Eventually(t, "renewal after the old root is retired", func() bool { return m.Renewals() == 2 })
	if m.Issuer() != newIssuer {
		t.Errorf("renewed from %.12s, want %.12s", m.Issuer(), newIssuer)
	}
}

// Renewal runs on the manager's clock: at half the certificate's life
// (±10%), not before, without a test sleeping for hours.
func TestRenewalOnTheClock(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := context.Background()
	tok, err := cp.Client(t).CreateToken(ctx, adminapi.CreateTokenRequest{Service: "web", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	fake := clock.NewFake(time.Now())
	m := workloadcert.New(spiffeid.RequireFromString(tok.Info.SPIFFEID), cp.GRPCAddr(), pool, tok.Token, testutil.Logger(t), fake)
	if err := m.Obtain(ctx); err != nil {
		t.Fatal(err)
	}
	life := m.Certificate().Leaf.NotAfter.Sub(fake.Now())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	fake.BlockUntil(1)
	fake.Advance(life * 39 / 100) // before the earliest renewal (40%)
	if got := m.Renewals(); got != 0 || fake.Timers() != 1 {
		t.Fatalf("at 39%% of the life: %d renewals, %d timers; want 0 and the renewal timer still waiting", got, fake.Timers())
	}
	first := m.Certificate().Leaf.SerialNumber
	fake.Advance(life * 22 / 100) // past the latest (60%)
	testutil.Eventually(t, "the renewal at half the life", func() bool { return m.Renewals() == 1 })
	if m.Certificate().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Error("renewed, but the certificate is the same")
	}
	fake.BlockUntil(1) // the next renewal is scheduled
}
