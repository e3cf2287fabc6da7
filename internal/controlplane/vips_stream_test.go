package controlplane_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// vips maps "name.namespace" to the virtual IP of each service in s.
func vips(s *pb.Snapshot) map[string]string {
	out := map[string]string{}
	for _, svc := range s.GetServices() {
		out[svc.GetName()+"."+svc.GetNamespace()] = svc.GetVirtualIp()
	}
	return out
}

// Every service in a snapshot has a distinct VIP from the range, and a
// restarted control plane on the same data dir hands out the same ones,
// also to services whose proxies have not reconnected.
func TestVIPsInSnapshotsSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "control")
	vipRange := netip.MustParsePrefix("198.18.0.0/24")
	cp := cptest.StartControlPlane(t, controlplane.Config{DataDir: dir, VIPRange: vipRange})
	catalogCert := workloadCert(t, cp, "shop", "catalog")
	ledgerCert := workloadCert(t, cp, "shop", "ledger")
	catalog, _ := connect(t, cp, catalogCert, &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:1", ServicesWanted: []string{"catalog.shop", "ledger.shop"}})
	ledger, _ := connect(t, cp, ledgerCert, &pb.Hello{Instance: "ledger-1", Service: "ledger", Namespace: "shop", AdvertiseAddr: "127.0.0.1:2"})
	var before map[string]string
	eventually(t, "both services with VIPs in catalog's snapshot", func() (bool, string) {
		select {
		case s := <-catalog.msgs:
			before = vips(s)
		default:
		}
		return len(before) == 2 && before["catalog.shop"] != "" && before["ledger.shop"] != "", "missing"
	})
	if before["catalog.shop"] == before["ledger.shop"] {
		t.Errorf("catalog and ledger share VIP %s", before["catalog.shop"])
	}
	for svc, ip := range before {
		if a, err := netip.ParseAddr(ip); err != nil || !vipRange.Contains(a) {
			t.Errorf("%s has VIP %q, want one in %s", svc, ip, vipRange)
		}
	}
	catalog.close()
	ledger.close()
	cp.Stop(t)

	cp = cptest.StartControlPlane(t, controlplane.Config{DataDir: dir, VIPRange: vipRange})
	_, s := connect(t, cp, catalogCert, &pb.Hello{Instance: "catalog-2", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:3", ServicesWanted: []string{"catalog.shop", "ledger.shop"}})
	if got := vips(s); got["catalog.shop"] != before["catalog.shop"] || got["ledger.shop"] != before["ledger.shop"] {
		t.Errorf("after a restart: VIPs %v, want %v", got, before)
	}
}
