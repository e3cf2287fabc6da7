package meshconfig

import (
	"net/netip"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"

	"github.com/trellismesh/trellis/internal/testutil"
)

// Compile maps VIPs both ways and rejects a snapshot whose VIPs are
// malformed or shared.
func TestCompileVIPs(t *testing.T) {
	ca, _ := testutil.NewCA(t, "trellis.test")
	snap := func(vips ...string) *pb.Snapshot {
		s := &pb.Snapshot{Version: "1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny"}, TrustBundle: [][]byte{ca.Roots()[0].Raw}}
		for i, v := range vips {
			s.Services = append(s.Services, &pb.Service{Name: string(rune('a' + i)), Namespace: "shop", VirtualIp: v})
		}
		return s
	}
	s, err := Compile(snap("240.240.0.1", "", "fd00::7"))
	if err != nil {
		t.Fatal(err)
	}
	if s.VIPs["a.shop"] != netip.MustParseAddr("240.240.0.1") || s.ServiceByVIP[netip.MustParseAddr("fd00::7")] != "c.shop" || len(s.VIPs) != 2 || len(s.ServiceByVIP) != 2 {
		t.Errorf("VIPs %v, ServiceByVIP %v", s.VIPs, s.ServiceByVIP)
	}
	for _, bad := range [][]string{{"240.240.0.300"}, {"240.240.0.1", "240.240.0.1"}} {
		if _, err := Compile(snap(bad...)); err == nil {
			t.Errorf("VIPs %v compiled; want the snapshot rejected", bad)
		}
	}
}
