package controlclient

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

func svc(name, addr string) *pb.Service {
	return &pb.Service{Name: name, Namespace: "shop", Endpoints: []*pb.Endpoint{{Address: addr, SpiffeId: "spiffe://trellis.local/ns/shop/sa/" + name}}}
}

func withHash(t *testing.T, s *pb.Snapshot) *pb.Snapshot {
	t.Helper()
	h, err := contentHash(s)
	if err != nil {
		t.Fatal(err)
	}
	s.Hash = h
	return s
}

func TestApplyDelta(t *testing.T) {
	base := withHash(t, &pb.Snapshot{Version: "4", Mesh: &pb.MeshConfig{MtlsMode: "STRICT"}, TrustBundle: [][]byte{{1}},
		Services: []*pb.Service{svc("catalog", "10.0.0.1:1"), svc("ledger", "10.0.0.2:1")}, Policies: [][]byte{[]byte(`{}`)}})
	want := withHash(t, &pb.Snapshot{Version: "5", Mesh: base.Mesh, TrustBundle: base.TrustBundle, Policies: base.Policies,
		Services: []*pb.Service{svc("catalog", "10.0.0.9:1"), svc("payments", "10.0.0.3:1")}})
	d := &pb.SnapshotDelta{Version: "5", Hash: want.Hash, BaseVersion: "4",
		Services: []*pb.Service{svc("payments", "10.0.0.3:1"), svc("catalog", "10.0.0.9:1")}, RemovedServices: []string{"ledger.shop"}}
	got, err := applyDelta(base, d)
	if err != nil {
		t.Fatalf("applyDelta: %v", err)
	}
	if h, _ := contentHash(got); h != want.Hash || got.GetVersion() != "5" || len(got.GetServices()) != 2 || got.GetServices()[0].GetName() != "catalog" {
		t.Errorf("applied delta: %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name string
		base *pb.Snapshot
		d    *pb.SnapshotDelta
		want string
	}{
		{"nothing running", nil, d, "no config is running"},
		{"another base", base, &pb.SnapshotDelta{Version: "6", Hash: want.Hash, BaseVersion: "3"}, "version 4 is running"},
		{"content that does not hash to the delta's hash", base, &pb.SnapshotDelta{Version: "5", Hash: want.Hash, BaseVersion: "4", Services: []*pb.Service{svc("payments", "10.0.0.3:1")}}, "gives content with hash"},
	} {
		if _, err := applyDelta(tc.base, tc.d); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "send the whole snapshot") {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// A delta carries every field of the running snapshot but its services:
// each per-workload list (JWTAuthentications, RateLimits, GatewayRoutes,
// EgressPolicies, TrafficPolicies, Routes...) stays, and the result
// hashes as the control plane's whole snapshot would. Every field of
// Snapshot is set here, so a field added later is covered or this fails.
func TestApplyDeltaCarriesEveryField(t *testing.T) {
	base := &pb.Snapshot{Version: "4", Mesh: &pb.MeshConfig{MtlsMode: "STRICT"}, TrustBundle: [][]byte{{1}}, ReportIntervalSeconds: 10, Issuer: "ca-1",
		Services: []*pb.Service{svc("catalog", "10.0.0.1:1")}, Peers: []*pb.PeerIdentity{{SpiffeId: "spiffe://x/ns/a/sa/b", Service: "b"}}}
	raw := [][]byte{[]byte(`{"k":1}`)}
	base.Policies, base.JwtAuthentications, base.RateLimits, base.GatewayRoutes = raw, raw, raw, raw
	base.EgressPolicies, base.TrafficPolicies, base.Routes = raw, raw, raw
	fields := base.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Name() != "version" && fd.Name() != "hash" && !base.ProtoReflect().Has(fd) {
			t.Fatalf("Snapshot field %s is not set in this test: set it, so that deltas are known to carry it", fd.Name())
		}
	}
	withHash(t, base)
	want := proto.CloneOf(base)
	want.Version, want.Services = "5", []*pb.Service{svc("catalog", "10.0.0.9:1")}
	withHash(t, want)
	got, err := applyDelta(base, &pb.SnapshotDelta{Version: "5", Hash: want.Hash, BaseVersion: "4", Services: []*pb.Service{svc("catalog", "10.0.0.9:1")}})
	if err != nil {
		t.Fatalf("applyDelta: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("applied delta:\n%v\nwant\n%v", got, want)
	}
}
