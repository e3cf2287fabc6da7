package controlplane_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

func serviceNames(s *pb.Snapshot) []string {
	var out []string
	for _, svc := range s.GetServices() {
		out = append(out, svc.GetName()+"."+svc.GetNamespace())
	}
	return out
}

func discoverMsg(services []string, vips []string) *pb.ProxyMessage {
	return &pb.ProxyMessage{Message: &pb.ProxyMessage_Discover{Discover: &pb.Discover{Services: services, VirtualIps: vips}}}
}

// A proxy is sent the services policies admit it to, and those it asks
// for by name or virtual IP, at once; a name nobody serves yet is pushed
// when its first proxy joins.
func TestScopeAndDiscoverOverStream(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{AckTimeout: time.Hour})
	ctx := context.Background()
	if _, err := cp.Client(t).Apply(ctx, decode(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{services: [frontend]}]
`), false); err != nil {
		t.Fatal(err)
	}
	cat, _ := connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002"})
	ledger, _ := connect(t, cp, workloadCert(t, cp, "shop", "ledger"), &pb.Hello{Instance: "l-1", Service: "ledger", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16003"})
	front, fs := connect(t, cp, workloadCert(t, cp, "shop", "frontend"), &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", ServicesWanted: []string{"nosuch.shop"}})
	if got := serviceNames(fs); !slices.Equal(got, []string{"catalog.shop"}) {
		t.Errorf("frontend's first snapshot lists %v, want only catalog.shop (the policy admits it there; nosuch.shop is unknown)", got)
	}
	// catalog now needs frontend's identity: its policy names it.
	if s := cat.next(t); len(s.GetPeers()) != 1 || s.GetPeers()[0].GetService() != "frontend" {
		t.Errorf("catalog's peers %v, want frontend", s.GetPeers())
	}

	// By name: pushed at once, not after the debounce.
	start := time.Now()
	front.send(t, discoverMsg([]string{"ledger.shop"}, nil))
	s := front.next(t)
	if got := serviceNames(s); !slices.Equal(got, []string{"catalog.shop", "ledger.shop"}) {
		t.Errorf("after discovering ledger: %v", got)
	}
	t.Logf("discovery answered in %s", time.Since(start))
	front.send(t, discoverMsg([]string{"ledger.shop"}, nil))
	front.expectNone(t, 200*time.Millisecond)

	// By virtual IP: payments joins; frontend is not sent it until it
	// asks for payments' address.
	pay, ps := connect(t, cp, workloadCert(t, cp, "shop", "payments"), &pb.Hello{Instance: "p-1", Service: "payments", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16004", ServicesWanted: []string{"payments.shop"}})
	var vip string
	for _, svc := range ps.GetServices() {
		if svc.GetName() == "payments" {
			vip = svc.GetVirtualIp()
		}
	}
	if vip == "" {
		t.Fatalf("payments' own snapshot gives it no virtual IP: %v", ps.GetServices())
	}
	front.expectNone(t, 200*time.Millisecond)
	front.send(t, discoverMsg(nil, []string{vip, "240.240.255.254"}))
	if got := serviceNames(front.next(t)); !slices.Equal(got, []string{"catalog.shop", "ledger.shop", "payments.shop"}) {
		t.Errorf("after discovering %s: %v", vip, got)
	}

	// The name asked for in Hello arrives with its first proxy.
	_, _ = connect(t, cp, workloadCert(t, cp, "shop", "nosuch"), &pb.Hello{Instance: "n-1", Service: "nosuch", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16005"})
	if got := serviceNames(front.next(t)); !slices.Contains(got, "nosuch.shop") {
		t.Errorf("after nosuch joined: %v, want nosuch.shop listed", got)
	}
	_, _ = ledger, pay

	// A malformed request ends the stream, saying what is wrong.
	front.send(t, discoverMsg([]string{"Not_A_Service"}, nil))
	if err := front.ended(t); status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed discover: %v, want InvalidArgument", err)
	}
}
