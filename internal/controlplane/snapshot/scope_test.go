package snapshot_test

import (
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

// policyYAML decodes one AuthorizationPolicy.
func policyYAML(t testing.TB, doc string) snapshot.Policy {
	t.Helper()
	objs, err := resource.Decode([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := resource.Validate(&objs[0]); err != nil {
		t.Fatal(err)
	}
	p, err := snapshot.PolicyFromObject(&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// scopeMesh: frontend, catalog, payments, ledger and a client-only job in
// shop; evil in attic; reports in billing.
func scopeMesh(t testing.TB, def string, policies ...snapshot.Policy) snapshot.Input {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := func(ns, svc, addr string) snapshot.Workload {
		return snapshot.Workload{Instance: svc + "-1", SPIFFEID: "spiffe://trellis.local/ns/" + ns + "/sa/" + svc, Service: svc, Namespace: ns,
			AdvertiseAddr: addr, Protocol: "http", Connected: true, ConnectedAt: at}
	}
	return snapshot.Input{
		Mesh:        meshSpec(t, "STRICT", def),
		TrustBundle: testRoots(t),
		Workloads: []snapshot.Workload{
			w("shop", "frontend", "10.0.0.1:15006"), w("shop", "catalog", "10.0.0.2:15006"), w("shop", "payments", "10.0.0.3:15006"),
			w("shop", "ledger", "10.0.0.4:15006"), w("shop", "job", ""), w("attic", "evil", "10.0.9.9:15006"), w("billing", "reports", "10.0.1.1:15006"),
		},
		Policies:       policies,
		ReportInterval: 30 * time.Second,
		TrustDomain:    spiffeid.RequireTrustDomainFromString("trellis.local"),
	}
}

func scopeOf(t *testing.T, v *snapshot.View, in snapshot.Input, svc string, wants ...snapshot.ServiceKey) (services []string, peers []string) {
	t.Helper()
	for _, w := range in.Workloads {
		if w.Service != svc {
			continue
		}
		w.Wants = wants
		s, err := snapshot.Build(v, &w)
		if err != nil {
			t.Fatal(err)
		}
		if ref, err := snapshot.Hash(s); err != nil || ref != s.GetHash() {
			t.Errorf("%s: hash %s, want the content's %s (%v)", svc, s.GetHash(), ref, err)
		}
		if _, err := meshconfig.Compile(withVersion(s)); err != nil {
			t.Errorf("%s: snapshot does not compile: %v", svc, err)
		}
		for _, x := range s.GetServices() {
			services = append(services, x.GetName()+"."+x.GetNamespace())
		}
		for _, p := range s.GetPeers() {
			peers = append(peers, p.GetService()+"="+p.GetSpiffeId())
		}
		return services, peers
	}
	t.Fatalf("no workload of %s", svc)
	return nil, nil
}

func TestScopedSnapshots(t *testing.T) {
	catalogFromFrontend := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{services: [frontend]}]
    to: [{methods: [GET]}]
`)
	paymentsByPrincipal := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments, namespace: shop}
spec:
  selector: {service: payments}
  enforcement: audit
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/front*"]}]
`)
	ledgerFromShop := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ledger, namespace: shop}
spec:
  selector: {service: ledger}
  rules:
  - from: [{namespaces: [shop]}]
`)
	reportsForAnyone := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reports, namespace: billing}
spec:
  rules:
  - to: [{methods: [GET]}]
`)
	denyEvil := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-evil, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  rules:
  - from: [{notServices: [evil]}]
    to: [{paths: ["/admin"]}]
`)
	in := scopeMesh(t, "deny", catalogFromFrontend, paymentsByPrincipal, ledgerFromShop, reportsForAnyone, denyEvil)
	v, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		svc       string
		wants     []snapshot.ServiceKey
		services  []string
		peers     []string
		reasoning string
	}{
		{svc: "frontend", services: []string{"reports.billing", "catalog.shop", "ledger.shop", "payments.shop"},
			reasoning: "admitted by service name, by a principal prefix (an audit policy too), by namespace, and by a policy admitting anyone"},
		{svc: "job", services: []string{"reports.billing", "ledger.shop"}, reasoning: "a client-only proxy of shop"},
		{svc: "evil", services: []string{"reports.billing"}, reasoning: "in no policy's from"},
		{svc: "evil", wants: []snapshot.ServiceKey{{Namespace: "shop", Name: "catalog"}, {Namespace: "shop", Name: "nosuch"}}, services: []string{"reports.billing", "catalog.shop"},
			reasoning: "what it asked for is added; an unknown name adds nothing"},
		{svc: "catalog", services: []string{"reports.billing", "ledger.shop"},
			peers:     []string{"evil=spiffe://trellis.local/ns/attic/sa/evil", "frontend=spiffe://trellis.local/ns/shop/sa/frontend"},
			reasoning: "its policies name frontend (ALLOW) and evil (a DENY's notServices): the inbound must know their services"},
		{svc: "ledger", services: []string{"reports.billing", "ledger.shop"},
			peers: []string{"catalog=spiffe://trellis.local/ns/shop/sa/catalog", "frontend=spiffe://trellis.local/ns/shop/sa/frontend", "job=spiffe://trellis.local/ns/shop/sa/job",
				"ledger=spiffe://trellis.local/ns/shop/sa/ledger", "payments=spiffe://trellis.local/ns/shop/sa/payments"},
			reasoning: "admitted by namespace: every shop identity is named"},
		{svc: "reports", services: []string{"reports.billing"}, reasoning: "a policy admitting anyone names no one"},
	} {
		services, peers := scopeOf(t, v, in, tc.svc, tc.wants...)
		if !slices.Equal(services, tc.services) || !slices.Equal(peers, tc.peers) {
			t.Errorf("%s (%s):\n services %v\n want     %v\n peers %v\n want  %v", tc.svc, tc.reasoning, services, tc.services, peers, tc.peers)
		}
	}
}

// In a mesh whose default is allow, a service no enforced ALLOW policy
// protects is open to every caller; a protected one only to those
// admitted.
func TestScopedSnapshotsDefaultAllow(t *testing.T) {
	catalogFromFrontend := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{services: [frontend]}]
`)
	auditPayments := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments, namespace: shop}
spec:
  selector: {service: payments}
  enforcement: audit
  rules:
  - from: [{services: [frontend]}]
`)
	in := scopeMesh(t, "allow", catalogFromFrontend, auditPayments)
	v, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	open := []string{"evil.attic", "reports.billing", "frontend.shop", "job.shop", "ledger.shop", "payments.shop"}
	if got, _ := scopeOf(t, v, in, "evil"); !slices.Equal(got, open) {
		t.Errorf("evil's services %v, want every unprotected one %v (payments is only audited)", got, open)
	}
	withCatalog := []string{"evil.attic", "reports.billing", "catalog.shop", "frontend.shop", "job.shop", "ledger.shop", "payments.shop"}
	if got, _ := scopeOf(t, v, in, "frontend"); !slices.Equal(got, withCatalog) {
		t.Errorf("frontend's services %v, want %v", got, withCatalog)
	}
}

// An endpoint moving changes the scoped snapshots that list it, and only
// those.
func TestScopedSnapshotsFollowEndpoints(t *testing.T) {
	p := policyYAML(t, `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{services: [frontend]}]
`)
	in := scopeMesh(t, "deny", p)
	v1, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	build := func(v *snapshot.View, svc string) *pb.Snapshot {
		for _, w := range in.Workloads {
			if w.Service == svc {
				s, err := snapshot.Build(v, &w)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
		t.Fatalf("no %s", svc)
		return nil
	}
	front1, evil1 := build(v1, "frontend"), build(v1, "evil")
	in.Workloads = slices.Clone(in.Workloads)
	for i := range in.Workloads {
		if in.Workloads[i].Service == "catalog" {
			in.Workloads[i].AdvertiseAddr = "10.0.0.22:15006"
		}
	}
	in.Previous = v1
	v2, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	front2, evil2 := build(v2, "frontend"), build(v2, "evil")
	// BuildFrom reuses the last snapshot only when nothing of it changed,
	// and always agrees with Build and with the hash's definition.
	for _, c := range []struct {
		svc         string
		prev, fresh *pb.Snapshot
	}{{"frontend", front1, front2}, {"evil", evil1, evil2}} {
		for _, w := range in.Workloads {
			if w.Service != c.svc {
				continue
			}
			got, err := snapshot.BuildFrom(v2, &w, c.prev)
			if err != nil {
				t.Fatal(err)
			}
			if ref, _ := snapshot.Hash(got); got.GetHash() != c.fresh.GetHash() || ref != got.GetHash() {
				t.Errorf("%s: BuildFrom hash %s, Build %s, content %s: want all equal", c.svc, got.GetHash(), c.fresh.GetHash(), ref)
			}
		}
	}
	if front1.GetHash() == front2.GetHash() {
		t.Error("frontend's snapshot did not change when catalog's endpoint moved")
	}
	if got := endpoints(front2, "catalog", "shop"); !slices.Equal(got, []string{"10.0.0.22:15006=spiffe://trellis.local/ns/shop/sa/catalog"}) {
		t.Errorf("frontend sees catalog at %v, want the new address", got)
	}
	if evil1.GetHash() != evil2.GetHash() {
		t.Error("evil's snapshot changed, though catalog is not in its scope")
	}
}

// endpoints lists "address=spiffe_id" of one service in s.
func endpoints(s *pb.Snapshot, name, ns string) []string {
	var out []string
	for _, svc := range s.GetServices() {
		if svc.GetName() == name && svc.GetNamespace() == ns {
			for _, e := range svc.GetEndpoints() {
				out = append(out, e.GetAddress()+"="+e.GetSpiffeId())
			}
		}
	}
	return out
}
