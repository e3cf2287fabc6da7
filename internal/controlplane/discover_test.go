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

func (p *testProxy) nextDelta(t *testing.T) *pb.SnapshotDelta {
	t.Helper()
	select {
	case d := <-p.deltas:
		return d
	case s := <-p.msgs:
		t.Fatalf("got a whole snapshot (version %s), want a delta", s.GetVersion())
	case <-time.After(waitFor):
		t.Fatal("no delta")
	}
	return nil
}

// A proxy that accepts deltas is sent only the services that changed,
// versioned and hashed as the whole snapshot; anything else changing, a
// NACK of a delta, and every new stream get the whole snapshot.
func TestDeltasOverStream(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{AckTimeout: time.Hour})
	catCert := workloadCert(t, cp, "shop", "catalog")
	connect(t, cp, catCert, &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002"})
	connect(t, cp, workloadCert(t, cp, "shop", "ledger"), &pb.Hello{Instance: "l-1", Service: "ledger", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16003"})
	hello := &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", AcceptsDeltas: true, ServicesWanted: []string{"catalog.shop", "ledger.shop"}}
	frontCert := workloadCert(t, cp, "shop", "frontend")
	front, first := connect(t, cp, frontCert, hello)
	if got := serviceNames(first); !slices.Equal(got, []string{"catalog.shop", "ledger.shop"}) {
		t.Fatalf("first snapshot (whole) lists %v", got)
	}
	desiredHash := func() string {
		info, _ := proxyInfo(t, cp, "f-1")
		return info.Desired.Hash
	}

	// A second catalog instance: a delta carrying catalog alone.
	connect(t, cp, catCert, &pb.Hello{Instance: "c-2", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16012"})
	d := front.nextDelta(t)
	if d.GetBaseVersion() != first.GetVersion() || len(d.GetServices()) != 1 || d.GetServices()[0].GetName() != "catalog" || len(d.GetServices()[0].GetEndpoints()) != 2 || len(d.GetRemovedServices()) != 0 {
		t.Errorf("delta %v: want catalog with 2 endpoints on version %s", d, first.GetVersion())
	}
	if d.GetHash() != desiredHash() {
		t.Errorf("delta hash %s, want the desired snapshot's %s", d.GetHash(), desiredHash())
	}

	// The proxy cannot apply it: NACK, and the same version comes whole.
	front.nack(t, &pb.Snapshot{Version: d.GetVersion()}, "delta on another base")
	whole := front.next(t)
	if whole.GetVersion() != d.GetVersion() || whole.GetHash() != d.GetHash() || len(endpoints(whole, "catalog", "shop")) != 2 {
		t.Errorf("after the NACK: version %s hash %.12s, want %s %.12s with both catalog endpoints", whole.GetVersion(), whole.GetHash(), d.GetVersion(), d.GetHash())
	}
	front.ack(t, whole)

	// A policy selecting frontend changes more than services: whole.
	if _, err := cp.Client(t).Apply(t.Context(), decode(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend, namespace: shop}
spec:
  selector: {service: frontend}
  action: DENY
  rules:
  - to: [{paths: ["/admin"]}]
`), false); err != nil {
		t.Fatal(err)
	}
	if s := front.next(t); len(s.GetPolicies()) != 1 {
		t.Errorf("after the policy: %d policies, want 1", len(s.GetPolicies()))
	}

	// A reconnect starts whole again.
	front.close()
	hello.RunningVersion, hello.RunningHash = whole.GetVersion(), whole.GetHash()
	if _, s := connect(t, cp, frontCert, hello); s == nil || len(s.GetServices()) != 2 {
		t.Errorf("first message of a new stream: %v, want the whole snapshot", s)
	}
	if got := controlMetric(t, cp, "trellis_control_snapshot_deltas_total"); got != 1 {
		t.Errorf("trellis_control_snapshot_deltas_total %v, want 1", got)
	}
}
