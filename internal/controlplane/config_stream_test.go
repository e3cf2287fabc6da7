package controlplane_test

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

func TestConfigStreamRefusals(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	shop := dialConfig(t, cp, workloadCert(t, cp, "shop", "frontend"))
	other := dialConfig(t, cp, workloadCert(t, cp, "shop", "intruder"))
	// Hold an instance so another identity cannot take it over.
	connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop"})

	ack := &pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: "1"}}}
	hello := func(h *pb.Hello) *pb.ProxyMessage { return helloMsg(h) }
	for _, tc := range []struct {
		name     string
		client   pb.ConfigClient
		first    *pb.ProxyMessage
		want     codes.Code
		contains string
	}{
		{"no client certificate", dialConfig(t, cp, nil), hello(&pb.Hello{Instance: "i", Service: "frontend", Namespace: "shop"}), codes.Unauthenticated, "client certificate"},
		{"first message not hello", shop, ack, codes.InvalidArgument, "must be hello"},
		{"empty first message", shop, &pb.ProxyMessage{}, codes.InvalidArgument, "must be hello"},
		{"namespace of another certificate", shop, hello(&pb.Hello{Instance: "i", Service: "frontend", Namespace: "billing"}), codes.PermissionDenied, "not the namespace of the client certificate"},
		{"default namespace with a shop certificate", shop, hello(&pb.Hello{Instance: "i", Service: "frontend"}), codes.PermissionDenied, `"default"`},
		{"no instance", shop, hello(&pb.Hello{Service: "frontend", Namespace: "shop"}), codes.InvalidArgument, "instance is required"},
		{"no service", shop, hello(&pb.Hello{Instance: "i", Namespace: "shop"}), codes.InvalidArgument, "DNS label"},
		{"service not a DNS label", shop, hello(&pb.Hello{Instance: "i", Service: "Front_End", Namespace: "shop"}), codes.InvalidArgument, "DNS label"},
		{"unknown protocol", shop, hello(&pb.Hello{Instance: "i", Service: "frontend", Namespace: "shop", Protocol: "udp"}), codes.InvalidArgument, "protocol"},
		{"advertise address without port", shop, hello(&pb.Hello{Instance: "i", Service: "frontend", Namespace: "shop", AdvertiseAddr: "10.0.0.1"}), codes.InvalidArgument, "advertise_addr"},
		{"unspecified advertise address", shop, hello(&pb.Hello{Instance: "i", Service: "frontend", Namespace: "shop", AdvertiseAddr: "0.0.0.0:15006"}), codes.InvalidArgument, "not dialable"},
		{"instance of another identity", other, hello(&pb.Hello{Instance: "catalog-1", Service: "intruder", Namespace: "shop"}), codes.PermissionDenied, "another identity"},
		{"service no join token named for this identity", other, hello(&pb.Hello{Instance: "i2", Service: "catalog", Namespace: "shop"}), codes.PermissionDenied, `was not issued a join token for service "catalog"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := openStream(t, tc.client, tc.first)
			err := p.ended(t)
			if status.Code(err) != tc.want || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("got %v, want %s containing %q", err, tc.want, tc.contains)
			}
		})
	}
	// The refused streams left nothing behind.
	items, err := cp.Client(t).ListProxies(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Instance != "catalog-1" {
		t.Errorf("registry holds %+v, want only catalog-1", items)
	}
}

func TestConfigStreamFirstSnapshot(t *testing.T) {
	// An ack timeout no test run reaches: unanswered means SYNCING here.
	cp := cptest.StartControlPlane(t, controlplane.Config{AckTimeout: time.Hour})
	cert := workloadCert(t, cp, "shop", "frontend")
	p, snap := connect(t, cp, cert, &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16006", ProxyVersion: "test", ServicesWanted: []string{"frontend.shop"}})

	if snap.GetVersion() != "1" || len(snap.GetHash()) != 64 {
		t.Errorf("version %q hash %q, want 1 and a hex SHA-256", snap.GetVersion(), snap.GetHash())
	}
	if ref, err := snapshot.Hash(snap); err != nil || ref != snap.GetHash() {
		t.Errorf("hash %s, want the hash of the snapshot's content %s (%v)", snap.GetHash(), ref, err)
	}
	if m := snap.GetMesh(); m.GetMtlsMode() != "STRICT" || m.GetAuthorizationDefault() != "deny" {
		t.Errorf("mesh %v, want STRICT/deny", m)
	}
	if snap.GetReportIntervalSeconds() != 30 {
		t.Errorf("report interval %d, want 30", snap.GetReportIntervalSeconds())
	}
	roots, err := identity.ReadCertsFile(filepath.Join(cp.DataDir, identity.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetTrustBundle()) != 1 {
		t.Fatalf("trust bundle has %d certificates, want 1", len(snap.GetTrustBundle()))
	}
	if c, err := x509.ParseCertificate(snap.GetTrustBundle()[0]); err != nil || !c.Equal(roots[0]) {
		t.Errorf("trust bundle is not ca.crt's root (%v)", err)
	}
	if got, want := endpoints(snap, "frontend", "shop"), []string{"127.0.0.1:16006=spiffe://trellis.local/ns/shop/sa/frontend"}; !slices.Equal(got, want) {
		t.Errorf("frontend endpoints %v, want %v", got, want)
	}
	if len(snap.GetPolicies()) != 0 {
		t.Errorf("%d policies, want none", len(snap.GetPolicies()))
	}

	info, ok := proxyInfo(t, cp, "f-1")
	if !ok || info.State != adminapi.ProxySyncing || info.Desired == nil || info.Desired.Version != "1" || info.SPIFFEID != "spiffe://trellis.local/ns/shop/sa/frontend" ||
		info.ProxyVersion != "test" || info.Protocol != "http" || !info.Connected {
		t.Errorf("proxy before ack: %+v, want SYNCING, desired 1, http, connected", info)
	}
	p.ack(t, snap)
	eventually(t, "state after ack", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "f-1")
		return info.State == adminapi.ProxySynced && info.Acked != nil && info.Acked.Hash == snap.GetHash(), info.State
	})
	p.expectNone(t, 100*time.Millisecond)
}

func TestConfigStreamServicesPoliciesAndMesh(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	ctx := context.Background()
	front, fs := connect(t, cp, workloadCert(t, cp, "shop", "frontend"), &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16001", ServicesWanted: []string{"catalog.shop"}})
	cat, cs := connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002", Labels: map[string]string{"version": "v1"}, ServicesWanted: []string{"frontend.shop"}})

	wantFront := []string{"127.0.0.1:16001=spiffe://trellis.local/ns/shop/sa/frontend"}
	wantCat := []string{"127.0.0.1:16002=spiffe://trellis.local/ns/shop/sa/catalog"}
	if got := endpoints(cs, "frontend", "shop"); !slices.Equal(got, wantFront) {
		t.Errorf("catalog's first snapshot: frontend endpoints %v, want %v", got, wantFront)
	}
	// frontend learns about catalog with a new version.
	fs2 := front.next(t)
	if fs2.GetVersion() != "2" || fs2.GetHash() == fs.GetHash() {
		t.Errorf("frontend's second snapshot: version %s, hash changed %v; want 2, changed", fs2.GetVersion(), fs2.GetHash() != fs.GetHash())
	}
	if got := endpoints(fs2, "catalog", "shop"); !slices.Equal(got, wantCat) {
		t.Errorf("frontend sees catalog endpoints %v, want %v", got, wantCat)
	}
	compiled, err := meshconfig.Compile(fs2)
	if err != nil {
		t.Fatal(err)
	}
	if svc := compiled.Services[meshconfig.ServiceKey("catalog", "shop")]; svc == nil || len(svc.IDs) != 1 {
		t.Errorf("compiled catalog.shop %+v, want one serving identity", svc)
	}

	// A policy for catalog reaches catalog only.
	if _, err := cp.Client(t).Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	cs2 := cat.next(t)
	if cs2.GetVersion() != "2" || len(cs2.GetPolicies()) != 1 {
		t.Fatalf("catalog after the policy: version %s with %d policies, want 2 with 1", cs2.GetVersion(), len(cs2.GetPolicies()))
	}
	c2, err := meshconfig.Compile(cs2)
	if err != nil {
		t.Fatalf("catalog's snapshot does not compile: %v", err)
	}
	if ps := c2.Policies; len(ps) != 1 || ps[0].Metadata.Namespace != "shop" || ps[0].Metadata.Name != "frontend-reads-catalog" {
		t.Errorf("catalog's policies %v, want shop/frontend-reads-catalog", ps)
	}
	front.expectNone(t, 300*time.Millisecond)

	// A Mesh change reaches everybody.
	if _, err := cp.Client(t).Apply(ctx, decode(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {mtls: {mode: PERMISSIVE}}\n"), false); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*testProxy{"frontend": front, "catalog": cat} {
		s := p.next(t)
		if s.GetMesh().GetMtlsMode() != "PERMISSIVE" || s.GetVersion() != "3" {
			t.Errorf("%s after the mesh change: version %s mode %s, want 3 PERMISSIVE", name, s.GetVersion(), s.GetMesh().GetMtlsMode())
		}
	}

	// Deleting the policy takes it back out of catalog's snapshot.
	if err := cp.Client(t).Delete(ctx, mustKind(t, "authz"), "shop", "frontend-reads-catalog"); err != nil {
		t.Fatal(err)
	}
	if s := cat.next(t); len(s.GetPolicies()) != 0 {
		t.Errorf("catalog after the delete: %d policies, want 0", len(s.GetPolicies()))
	}

	services, err := cp.Client(t).ListServices(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	// Every service has a virtual IP from the default range, each its own.
	if len(services) != 2 || !strings.HasPrefix(services[0].VirtualIP, "240.240.") || !strings.HasPrefix(services[1].VirtualIP, "240.240.") || services[0].VirtualIP == services[1].VirtualIP {
		t.Errorf("services %+v: want two distinct virtual IPs in 240.240.0.0/16", services)
	}
	for i := range services {
		services[i].VirtualIP = ""
	}
	want := []adminapi.ServiceInfo{
		{Name: "catalog", Namespace: "shop", Protocol: "http", Endpoints: 1, Instances: 1, Connected: 1},
		{Name: "frontend", Namespace: "shop", Protocol: "http", Endpoints: 1, Instances: 1, Connected: 1},
	}
	if !slices.Equal(services, want) {
		t.Errorf("services %+v, want %+v", services, want)
	}
	if others, err := cp.Client(t).ListServices(ctx, "billing"); err != nil || len(others) != 0 {
		t.Errorf("services in billing: %v, %v; want none", others, err)
	}
}

func TestConfigStreamAckNack(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{AckTimeout: time.Hour})
	ctx := context.Background()
	cat, s1 := connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002"})
	cat.ack(t, s1)
	eventually(t, "state after ack", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "c-1")
		return info.State == adminapi.ProxySynced, info.State
	})

	if _, err := cp.Client(t).Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	s2 := cat.next(t)
	if info, _ := proxyInfo(t, cp, "c-1"); info.State != adminapi.ProxySyncing || info.Desired.Version != s2.GetVersion() || info.Acked.Version != s1.GetVersion() {
		t.Errorf("before answering %s: %+v, want SYNCING, desired %s, acked %s", s2.GetVersion(), info, s2.GetVersion(), s1.GetVersion())
	}
	cat.nack(t, s2, "policy engine: boom")
	eventually(t, "state after nack", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "c-1")
		return info.State == adminapi.ProxyNacked && info.Error == "policy engine: boom" && info.LastNack != nil && info.LastNack.Version == s2.GetVersion(), info.State
	})
	// The last good config stays the acknowledged one, and the detail
	// shows what the proxy refused: the policy it does not run.
	detail, err := cp.Client(t).GetProxy(ctx, "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if detail.State != adminapi.ProxyNacked || detail.Acked.Version != s1.GetVersion() || detail.Desired.Version != s2.GetVersion() {
		t.Errorf("detail: state %s, acked %v, desired %v; want NACKED, acked %s, desired %s", detail.State, detail.Acked, detail.Desired, s1.GetVersion(), s2.GetVersion())
	}
	if !strings.Contains(string(detail.DesiredConfig), `"frontend-reads-catalog"`) || strings.Contains(string(detail.AckedConfig), `"frontend-reads-catalog"`) {
		t.Errorf("desired config should hold the policy and the acknowledged one not:\ndesired %s\nacked %s", detail.DesiredConfig, detail.AckedConfig)
	}
	for _, want := range []string{
		"--- acked (version 1, hash " + s1.GetHash()[:12] + ")\n+++ desired (version 2, hash " + s2.GetHash()[:12] + ")\n",
		`-  "hash": "` + s1.GetHash() + `",`,
		`+  "hash": "` + s2.GetHash() + `",`,
		`+        "name": "frontend-reads-catalog",`,
	} {
		if !strings.Contains(detail.Diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, detail.Diff)
		}
	}
	// The proxy still runs s1 and says so.
	cat.send(t, &pb.ProxyMessage{Message: &pb.ProxyMessage_Report{Report: &pb.Report{RunningVersion: s1.GetVersion(), RunningHash: s1.GetHash()}}})
	eventually(t, "running after report", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "c-1")
		return info.Running != nil && info.Running.Hash == s1.GetHash() && info.State == adminapi.ProxyNacked, info.State
	})
	// An answer for a version never sent is recorded, not an error: the
	// stream stays up.
	cat.send(t, &pb.ProxyMessage{Message: &pb.ProxyMessage_Ack{Ack: &pb.Ack{Version: "99", Hash: "feed"}}})
	cat.ack(t, s2)
	eventually(t, "state after a late ack", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "c-1")
		return info.State == adminapi.ProxySynced, info.State
	})

	resp, err := http.Get(cp.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"trellis_control_connected_proxies 1",
		"trellis_control_snapshot_pushes_total 2",
		"trellis_control_acks_total 3",
		"trellis_control_nacks_total 1",
		"trellis_control_push_duration_seconds_count",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestConfigStreamGracePeriod(t *testing.T) {
	const grace = 300 * time.Millisecond
	cp := cptest.StartControlPlane(t, controlplane.Config{EndpointGracePeriod: grace})
	ctx := context.Background()
	front, _ := connect(t, cp, workloadCert(t, cp, "shop", "frontend"), &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16001", ServicesWanted: []string{"catalog.shop"}})
	catCert := workloadCert(t, cp, "shop", "catalog")
	catHello := &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002"}
	cat, cs := connect(t, cp, catCert, catHello)
	fs := front.next(t)
	if len(endpoints(fs, "catalog", "shop")) != 1 {
		t.Fatalf("frontend does not see catalog: %v", fs.GetServices())
	}

	// A reconnect within the grace period is seamless: frontend gets
	// nothing new, catalog gets the same version again.
	cat.close()
	eventually(t, "catalog disconnected", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "c-1")
		return info.State == adminapi.ProxyDisconnected && info.Since != nil, info.State
	})
	cat, cs2 := connect(t, cp, catCert, &pb.Hello{Instance: "c-1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16002", RunningVersion: cs.GetVersion(), RunningHash: cs.GetHash()})
	if cs2.GetVersion() != cs.GetVersion() || cs2.GetHash() != cs.GetHash() {
		t.Errorf("reconnect: version %s hash %s, want the unchanged %s %s", cs2.GetVersion(), cs2.GetHash(), cs.GetVersion(), cs.GetHash())
	}
	front.expectNone(t, grace+200*time.Millisecond)

	// Gone for good: the endpoint stays for the grace period, then goes.
	cat.close()
	gone := time.Now()
	front.expectNone(t, grace/2)
	if svcs, err := cp.Client(t).ListServices(ctx, "shop"); err != nil || len(svcs) != 2 || svcs[0].Name != "catalog" || svcs[0].Connected != 0 || svcs[0].Endpoints != 1 {
		t.Errorf("services during the grace period: %+v, %v; want catalog with its endpoint, not connected", svcs, err)
	}
	fs = front.next(t)
	if waited := time.Since(gone); waited < grace {
		t.Errorf("endpoint removed after %s, before the %s grace period", waited, grace)
	}
	// The service stays known, without endpoints: callers are told it has
	// no healthy endpoint, not that the name is unknown.
	if got := endpoints(fs, "catalog", "shop"); got == nil || len(got) != 0 {
		t.Errorf("frontend sees catalog's endpoints as %v after the grace period, want the service listed without endpoints", got)
	}
	if _, ok := proxyInfo(t, cp, "c-1"); ok {
		t.Errorf("catalog's instance still listed after its grace period")
	}
	if svcs, err := cp.Client(t).ListServices(ctx, "shop"); err != nil || len(svcs) != 2 || svcs[0].Name != "catalog" || svcs[0].Instances != 0 || svcs[0].Endpoints != 0 {
		t.Errorf("services after the grace period: %+v, %v; want catalog without instances or endpoints", svcs, err)
	}
}

func TestConfigStreamReplacedBySameInstance(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	cert := workloadCert(t, cp, "shop", "frontend")
	hello := &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop", AdvertiseAddr: "127.0.0.1:16001"}
	old, s1 := connect(t, cp, cert, hello)
	newer, s2 := connect(t, cp, cert, hello)
	if err := old.ended(t); status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("older stream ended with %v, want Aborted: replaced", err)
	}
	if s2.GetVersion() != s1.GetVersion() || s2.GetHash() != s1.GetHash() {
		t.Errorf("newer stream got %s/%s, want the unchanged %s/%s", s2.GetVersion(), s2.GetHash(), s1.GetVersion(), s1.GetHash())
	}
	items, err := cp.Client(t).ListProxies(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || !items[0].Connected {
		t.Errorf("proxies %+v, want f-1 connected once", items)
	}
	// The newer stream is the live one: it is still served.
	newer.ack(t, s2)
	eventually(t, "state after ack on the newer stream", func() (bool, string) {
		info, _ := proxyInfo(t, cp, "f-1")
		return info.State == adminapi.ProxySynced, info.State
	})
}

func TestConfigStreamVersionsSurviveRestart(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	cert := workloadCert(t, cp, "shop", "frontend")
	_, s1 := connect(t, cp, cert, &pb.Hello{Instance: "f-1", Service: "frontend", Namespace: "shop"})
	// Proxies coming from an earlier control plane life: one runs what we
	// would send, one runs something else. Versions never go backwards.
	_, same := connect(t, cp, cert, &pb.Hello{Instance: "f-2", Service: "frontend", Namespace: "shop", RunningVersion: "7", RunningHash: s1.GetHash()})
	if same.GetVersion() != "7" || same.GetHash() != s1.GetHash() {
		t.Errorf("unchanged content: version %s, want 7", same.GetVersion())
	}
	_, changed := connect(t, cp, cert, &pb.Hello{Instance: "f-3", Service: "frontend", Namespace: "shop", RunningVersion: "7", RunningHash: "0000"})
	if changed.GetVersion() != "8" {
		t.Errorf("changed content: version %s, want 8", changed.GetVersion())
	}
}

func TestCloseWithOpenStreams(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	var streams []*testProxy
	for _, svc := range []string{"frontend", "catalog"} {
		p, _ := connect(t, cp, workloadCert(t, cp, "shop", svc), &pb.Hello{Instance: svc + "-1", Service: svc, Namespace: "shop"})
		streams = append(streams, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := cp.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %s with open streams", took)
	}
	for _, p := range streams {
		if err := p.ended(t); status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable", err)
		}
	}
}
