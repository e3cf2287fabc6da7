package controlplane

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Only services may differ for a delta: any other field differing, each
// per-workload list included, means the whole snapshot goes.
func TestOnlyServicesDiffer(t *testing.T) {
	raw := [][]byte{[]byte(`{"k":1}`)}
	a := &pb.Snapshot{Version: "1", Hash: "h1", Mesh: &pb.MeshConfig{MtlsMode: "STRICT"}, Services: []*pb.Service{{Name: "a", Namespace: "shop"}}}
	b := proto.CloneOf(a)
	b.Version, b.Hash, b.Services = "2", "h2", []*pb.Service{{Name: "b", Namespace: "shop"}}
	if !onlyServicesDiffer(a, b) {
		t.Fatal("services, version and hash differ only: want a delta")
	}
	for name, set := range map[string]func(s *pb.Snapshot){
		"mesh":                func(s *pb.Snapshot) { s.Mesh = &pb.MeshConfig{MtlsMode: "PERMISSIVE"} },
		"policies":            func(s *pb.Snapshot) { s.Policies = raw },
		"jwt_authentications": func(s *pb.Snapshot) { s.JwtAuthentications = raw },
		"rate_limits":         func(s *pb.Snapshot) { s.RateLimits = raw },
		"gateway_routes":      func(s *pb.Snapshot) { s.GatewayRoutes = raw },
		"egress_policies":     func(s *pb.Snapshot) { s.EgressPolicies = raw },
		"traffic_policies":    func(s *pb.Snapshot) { s.TrafficPolicies = raw },
		"routes":              func(s *pb.Snapshot) { s.Routes = raw },
		"issuer":              func(s *pb.Snapshot) { s.Issuer = "ca-2" },
	} {
		c := proto.CloneOf(b)
		set(c)
		if onlyServicesDiffer(a, c) {
			t.Errorf("%s differs: want the whole snapshot, not a delta", name)
		}
	}
}
