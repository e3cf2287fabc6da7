package proxy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// proxyState is the control plane's view of the only proxy of service.
func proxyState(t *testing.T, cp *meshtest.ControlPlane, service string) adminapi.ProxyInfo {
	t.Helper()
	items, err := cp.Client(t).ListProxies(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range items {
		if p.Service == service {
			return p
		}
	}
	t.Fatalf("no proxy of %s.shop registered", service)
	return adminapi.ProxyInfo{}
}

func sha256Hex(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// TestReportsAndDriftRepair: a real proxy reports its running config,
// certificate and trust anchors; when it reports a running hash other than
// what it acknowledged (a test hook), the control plane marks it drifted
// and re-sends the same snapshot, which the proxy applies again; once it
// reports the truth again it is SYNCED.
func TestReportsAndDriftRepair(t *testing.T) {
	cpLogs, logs := testutil.NewLogBuffer(t), testutil.NewLogBuffer(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{DriftGrace: 200 * time.Millisecond, ReportInterval: time.Second, Logger: cpLogs.Logger})
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", Logger: logs.Logger.With("proxy", "catalog")})

	// What the proxy reports: its certificate's expiry and issuer (the
	// intermediate), and the bundle's roots.
	cert := p.Identity().Certificate()
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	wantRoots := []string{sha256Hex(roots[0].Raw)}
	var info adminapi.ProxyInfo
	testutil.Eventually(t, "the first report and ACK", func() bool {
		info = proxyState(t, cp, "catalog")
		return info.State == adminapi.ProxySynced && info.Running != nil && info.CertIssuer != ""
	})
	if len(cert.Certificate) < 2 || info.CertIssuer != sha256Hex(cert.Certificate[1]) {
		t.Errorf("cert issuer %q, want the SHA-256 of the intermediate in the proxy's chain", info.CertIssuer)
	}
	if info.CertExpiry == nil || !info.CertExpiry.Equal(cert.Leaf.NotAfter) {
		t.Errorf("cert expiry %v, want %s", info.CertExpiry, cert.Leaf.NotAfter)
	}
	if !slices.Equal(info.TrustRoots, wantRoots) {
		t.Errorf("trust roots %v, want %v", info.TrustRoots, wantRoots)
	}
	if info.Running.Hash != info.Desired.Hash || info.DriftRepairs != 0 {
		t.Errorf("running %+v, desired %+v, %d repairs; want running = desired, no repairs", info.Running, info.Desired, info.DriftRepairs)
	}
	desired := *info.Desired
	applied := []string{`msg="config applied"`, " version=" + desired.Version + " "}
	if n := logs.CountLines(applied...); n != 1 {
		t.Fatalf("version %s applied %d times before any drift, want once", desired.Version, n)
	}

	p.TamperRunningHash(func(h string) string { return "tampered-" + h })
	testutil.Eventually(t, "a drift repair", func() bool {
		info = proxyState(t, cp, "catalog")
		return info.DriftRepairs >= 1 && info.LastDriftRepair != nil
	})
	cpLogs.WaitLog(t, "config drift", "instance="+info.Instance, "desired_version="+desired.Version, "running_hash=tampered-")
	// The repair re-sent the same version, and the proxy applied it again.
	testutil.Eventually(t, "the re-sent version applied again", func() bool { return logs.CountLines(applied...) >= 2 })
	if info.Desired.Version != desired.Version || info.Desired.Hash != desired.Hash {
		t.Errorf("desired after the repair %+v, want the unchanged %+v", info.Desired, desired)
	}

	p.TamperRunningHash(nil)
	testutil.Eventually(t, "SYNCED once the proxy reports the truth", func() bool {
		info = proxyState(t, cp, "catalog")
		return info.State == adminapi.ProxySynced && info.Running != nil && info.Running.Hash == desired.Hash && info.Running.At.After(*info.LastDriftRepair)
	})
	if info.DriftRepairs < 1 || info.Desired.Version != desired.Version {
		t.Errorf("after the repair: %d repairs, desired %s; want at least 1 and %s", info.DriftRepairs, info.Desired.Version, desired.Version)
	}
}

// TestReportOnRenewal: a renewed certificate is reported at once, not at
// the next report interval (30s here).
func TestReportOnRenewal(t *testing.T) {
	cp := meshtest.StartControlPlane(t, controlplane.Config{WorkloadTTL: 3 * time.Second})
	p := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", Logger: testutil.NewLogBuffer(t).Logger.With("proxy", "catalog")})
	var first time.Time
	testutil.Eventually(t, "the first report", func() bool {
		if e := proxyState(t, cp, "catalog").CertExpiry; e != nil {
			first = *e
			return true
		}
		return false
	})
	testutil.Eventually(t, "the renewed certificate reported", func() bool {
		e := proxyState(t, cp, "catalog").CertExpiry
		return e != nil && e.After(first)
	})
	if e := proxyState(t, cp, "catalog").CertExpiry; e.Before(p.Identity().Certificate().Leaf.NotAfter.Add(-3 * time.Second)) {
		t.Errorf("reported expiry %s lags the current certificate's %s", e, p.Identity().Certificate().Leaf.NotAfter)
	}
}
