package snapshot_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil"
)

// testPolicy builds a decoded policy in ns with the given selector (YAML
// flow mapping, "{}" for empty) and rules allowing GET.
func testPolicy(t testing.TB, ns, name, selector string) snapshot.Policy {
	t.Helper()
	return policyYAML(t, fmt.Sprintf(`
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:
  selector: %s
  rules:
  - to: [{methods: [GET]}]
`, name, ns, selector))
}

func TestPolicySelection(t *testing.T) {
	catalog := snapshot.Workload{Service: "catalog", Namespace: "shop", Labels: map[string]string{"version": "v2", "tier": "backend"}}
	unlabeled := snapshot.Workload{Service: "catalog", Namespace: "shop"}
	system := snapshot.Workload{Service: "gateway", Namespace: "trellis-system"}
	for _, tc := range []struct {
		name     string
		ns       string
		selector string
		w        snapshot.Workload
		want     bool
	}{
		{"empty selector selects its namespace", "shop", "{}", catalog, true},
		{"empty selector ignores other namespaces", "billing", "{}", catalog, false},
		{"service matches", "shop", "{service: catalog}", catalog, true},
		{"service differs", "shop", "{service: frontend}", catalog, false},
		{"service of another namespace", "billing", "{service: catalog}", catalog, false},
		{"labels are a subset", "shop", "{matchLabels: {version: v2}}", catalog, true},
		{"all labels match", "shop", "{matchLabels: {version: v2, tier: backend}}", catalog, true},
		{"label value differs", "shop", "{matchLabels: {version: v1}}", catalog, false},
		{"label key missing", "shop", "{matchLabels: {zone: a}}", catalog, false},
		{"labels on an unlabeled workload", "shop", "{matchLabels: {version: v2}}", unlabeled, false},
		{"service and labels match", "shop", "{service: catalog, matchLabels: {version: v2}}", catalog, true},
		{"service matches, labels do not", "shop", "{service: catalog, matchLabels: {version: v1}}", catalog, false},
		{"labels match, service does not", "shop", "{service: frontend, matchLabels: {version: v2}}", catalog, false},
		{"mesh-wide policy selects every namespace", "trellis-system", "{}", catalog, true},
		{"trellis-system policy with a selector is not mesh-wide", "trellis-system", "{service: catalog}", catalog, false},
		{"trellis-system selector in its own namespace", "trellis-system", "{service: gateway}", system, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy(t, tc.ns, "p", tc.selector)
			if got := snapshot.Selects(&p, &tc.w); got != tc.want {
				t.Errorf("policy %s %s selects %s/%s %v: got %v, want %v", tc.ns, tc.selector, tc.w.Namespace, tc.w.Service, tc.w.Labels, got, tc.want)
			}
		})
	}
}

// testInput is a small mesh: frontend and catalog (two instances) in shop,
// payments in billing, with a few policies.
func testInput(t testing.TB, roots [][]byte) snapshot.Input {
	t.Helper()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return snapshot.Input{
		Mesh:        meshSpec(t, "STRICT", "deny"),
		TrustBundle: roots,
		Workloads: []snapshot.Workload{
			{Instance: "c2", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.3:15006", Protocol: "http", Labels: map[string]string{"version": "v2"}, Connected: true, ConnectedAt: at},
			{Instance: "f1", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/frontend", Service: "frontend", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006", Protocol: "http", Connected: true, ConnectedAt: at},
			{Instance: "c1", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006", Protocol: "http", Labels: map[string]string{"version": "v1"}, Connected: true, ConnectedAt: at},
			{Instance: "p1", SPIFFEID: "spiffe://trellis.local/ns/billing/sa/payments", Service: "payments", Namespace: "billing", AdvertiseAddr: "10.0.1.1:15006", Protocol: "grpc", Connected: true, ConnectedAt: at},
		},
		Policies: []snapshot.Policy{
			testPolicy(t, "shop", "z-catalog-v2", "{service: catalog, matchLabels: {version: v2}}"),
			testPolicy(t, "shop", "a-catalog", "{service: catalog}"),
			testPolicy(t, "trellis-system", "mesh-wide", "{}"),
			testPolicy(t, "billing", "payments", "{}"),
		},
		ReportInterval: 30 * time.Second,
		TrustDomain:    spiffeid.RequireTrustDomainFromString("trellis.local"),
	}
}

func meshSpec(t testing.TB, mode, def string) resource.MeshSpec {
	t.Helper()
	m := resource.DefaultMesh()
	m.Spec = []byte(fmt.Sprintf(`{"mtls":{"mode":%q},"authorization":{"default":%q}}`, mode, def))
	spec, err := resource.MeshSpecOf(&m)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func testRoots(t testing.TB) [][]byte {
	t.Helper()
	ca, _ := testutil.NewCA(t, "trellis.local")
	return [][]byte{ca.Roots()[0].Raw}
}

func policyNames(t testing.TB, s *pb.Snapshot) []string {
	t.Helper()
	c, err := meshconfig.Compile(withVersion(s))
	if err != nil {
		t.Fatalf("snapshot does not compile: %v", err)
	}
	var out []string
	for _, p := range c.Policies {
		out = append(out, p.Metadata.Namespace+"/"+p.Metadata.Name)
	}
	return out
}

// withVersion returns s with a version, as the registry would assign.
func withVersion(s *pb.Snapshot) *pb.Snapshot {
	if s.GetVersion() != "" {
		return s
	}
	c := proto.CloneOf(s)
	c.Version = "1"
	return c
}

func TestBuildSnapshot(t *testing.T) {
	in := testInput(t, testRoots(t))
	snap, err := buildSnapshot(in, in.Workloads[0]) // catalog v2
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetVersion() != "" || snap.GetHash() == "" {
		t.Errorf("version %q hash %q: want no version (the registry assigns it) and a hash", snap.GetVersion(), snap.GetHash())
	}
	if got := snap.GetMesh(); got.GetMtlsMode() != "STRICT" || got.GetAuthorizationDefault() != "deny" {
		t.Errorf("mesh %v, want STRICT/deny", got)
	}
	if snap.GetReportIntervalSeconds() != 30 {
		t.Errorf("report interval %d, want 30", snap.GetReportIntervalSeconds())
	}
	var services []string
	for _, s := range snap.GetServices() {
		var eps []string
		for _, e := range s.GetEndpoints() {
			eps = append(eps, e.GetAddress()+"="+e.GetSpiffeId())
		}
		services = append(services, fmt.Sprintf("%s/%s %s %v", s.GetNamespace(), s.GetName(), s.GetProtocol(), eps))
	}
	want := []string{
		"billing/payments grpc [10.0.1.1:15006=spiffe://trellis.local/ns/billing/sa/payments]",
		"shop/catalog http [10.0.0.2:15006=spiffe://trellis.local/ns/shop/sa/catalog 10.0.0.3:15006=spiffe://trellis.local/ns/shop/sa/catalog]",
		"shop/frontend http [10.0.0.1:15006=spiffe://trellis.local/ns/shop/sa/frontend]",
	}
	if !slices.Equal(services, want) {
		t.Errorf("services:\n got %q\nwant %q", services, want)
	}
	if got, want := policyNames(t, snap), []string{"shop/a-catalog", "shop/z-catalog-v2", "trellis-system/mesh-wide"}; !slices.Equal(got, want) {
		t.Errorf("catalog v2 policies %v, want %v", got, want)
	}
	for _, tc := range []struct {
		w    int
		want []string
	}{
		{2, []string{"shop/a-catalog", "trellis-system/mesh-wide"}},
		{1, []string{"trellis-system/mesh-wide"}},
		{3, []string{"billing/payments", "trellis-system/mesh-wide"}},
	} {
		s, err := buildSnapshot(in, in.Workloads[tc.w])
		if err != nil {
			t.Fatal(err)
		}
		if got := policyNames(t, s); !slices.Equal(got, tc.want) {
			t.Errorf("%s policies %v, want %v", in.Workloads[tc.w].Instance, got, tc.want)
		}
	}
}

func TestBuildSnapshotEndpoints(t *testing.T) {
	in := testInput(t, testRoots(t))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in.Workloads = []snapshot.Workload{
		// A restarted proxy: the old instance is in its grace period, the
		// new one took over its address with another label.
		{Instance: "old", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006", Protocol: "http", Labels: map[string]string{"gen": "old"}, ConnectedAt: at},
		{Instance: "new", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.2:15006", Protocol: "http", Labels: map[string]string{"gen": "new"}, Connected: true, ConnectedAt: at.Add(time.Second)},
		// One instance misdeclares the protocol: the majority wins.
		{Instance: "x", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/catalog", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.4:15006", Protocol: "tcp", Connected: true, ConnectedAt: at},
		// A client-only workload: listed, no endpoint.
		{Instance: "cli", SPIFFEID: "spiffe://trellis.local/ns/shop/sa/batch", Service: "batch", Namespace: "shop", Protocol: "tcp", Connected: true, ConnectedAt: at},
	}
	snap, err := buildSnapshot(in, in.Workloads[1])
	if err != nil {
		t.Fatal(err)
	}
	svcs := snap.GetServices()
	if len(svcs) != 2 || svcs[0].GetName() != "batch" || svcs[1].GetName() != "catalog" {
		t.Fatalf("services %v, want batch and catalog", svcs)
	}
	if n := len(svcs[0].GetEndpoints()); n != 0 || svcs[0].GetProtocol() != "tcp" {
		t.Errorf("batch: %d endpoints, protocol %q; want none, tcp", n, svcs[0].GetProtocol())
	}
	eps := svcs[1].GetEndpoints()
	if svcs[1].GetProtocol() != "http" || len(eps) != 2 || eps[0].GetAddress() != "10.0.0.2:15006" || eps[0].GetLabels()["gen"] != "new" || eps[1].GetAddress() != "10.0.0.4:15006" {
		t.Errorf("catalog: protocol %q endpoints %v; want http, 10.0.0.2 (the new instance) and 10.0.0.4", svcs[1].GetProtocol(), eps)
	}
}

func TestSnapshotHash(t *testing.T) {
	roots := testRoots(t)
	base := testInput(t, roots)
	self := base.Workloads[0]
	build := func(in snapshot.Input) *pb.Snapshot {
		t.Helper()
		s, err := buildSnapshot(in, self)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := snapshot.Hash(s)
		if err != nil {
			t.Fatal(err)
		}
		if s.GetHash() != ref {
			t.Fatalf("hash %s, but the deterministic marshaling of the snapshot hashes to %s", s.GetHash(), ref)
		}
		return s
	}
	want := build(base).GetHash()

	// The same content in another order, rebuilt from fresh decodes, has
	// the same hash: map and list order never leak into it.
	shuffled := testInput(t, roots)
	slices.Reverse(shuffled.Workloads)
	slices.Reverse(shuffled.Policies)
	if got := build(shuffled).GetHash(); got != want {
		t.Errorf("reordered input: hash %s, want %s", got, want)
	}
	if got := build(base).GetHash(); got != want {
		t.Errorf("second build: hash %s, want %s", got, want)
	}

	for _, tc := range []struct {
		name   string
		change func(in *snapshot.Input)
	}{
		{"mesh mode", func(in *snapshot.Input) { in.Mesh = meshSpec(t, "PERMISSIVE", "deny") }},
		{"mesh default", func(in *snapshot.Input) { in.Mesh = meshSpec(t, "STRICT", "allow") }},
		{"endpoint added", func(in *snapshot.Input) {
			w := in.Workloads[1]
			w.Instance, w.AdvertiseAddr = "f2", "10.0.0.9:15006"
			in.Workloads = append(in.Workloads, w)
		}},
		{"endpoint label", func(in *snapshot.Input) { in.Workloads[1].Labels = map[string]string{"a": "b"} }},
		{"policy added", func(in *snapshot.Input) {
			in.Policies = append(in.Policies, testPolicy(t, "shop", "more", "{}"))
		}},
		{"policy removed", func(in *snapshot.Input) { in.Policies = in.Policies[1:] }},
		{"trust bundle", func(in *snapshot.Input) { in.TrustBundle = append(in.TrustBundle, testRoots(t)...) }},
		{"report interval", func(in *snapshot.Input) { in.ReportInterval = time.Minute }},
	} {
		in := testInput(t, roots)
		tc.change(&in)
		if got := build(in).GetHash(); got == want {
			t.Errorf("%s changed: hash unchanged", tc.name)
		}
	}

	// A policy that selects another workload is not part of this one's
	// snapshot, so it does not change its hash.
	in := testInput(t, roots)
	in.Policies = append(in.Policies, testPolicy(t, "shop", "frontend-only", "{service: frontend}"))
	if got := build(in).GetHash(); got != want {
		t.Errorf("policy for another workload changed the hash")
	}
}

func TestBuiltSnapshotCompiles(t *testing.T) {
	in := testInput(t, testRoots(t))
	snap, err := buildSnapshot(in, in.Workloads[1])
	if err != nil {
		t.Fatal(err)
	}
	c, err := meshconfig.Compile(withVersion(snap))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	svc := c.Services[meshconfig.ServiceKey("catalog", "shop")]
	if svc == nil || len(svc.Endpoints) != 2 || len(svc.IDs) != 1 {
		t.Fatalf("compiled catalog.shop = %+v, want 2 endpoints with one identity", svc)
	}
	if c.MTLSMode != "STRICT" || c.AuthzDefault != "deny" || len(c.Roots) != 1 {
		t.Errorf("compiled mesh %s/%s roots %d", c.MTLSMode, c.AuthzDefault, len(c.Roots))
	}
}

// benchInput is a mesh of n services with two endpoints each and a few
// policies.
func benchInput(b *testing.B, n int) snapshot.Input {
	in := snapshot.Input{Mesh: meshSpec(b, "STRICT", "deny"), TrustBundle: testRoots(b), ReportInterval: 30 * time.Second,
		TrustDomain: spiffeid.RequireTrustDomainFromString("trellis.local")}
	at := time.Now()
	for i := range n {
		ns := fmt.Sprintf("ns%d", i%10)
		svc := fmt.Sprintf("svc%d", i)
		for j := range 2 {
			in.Workloads = append(in.Workloads, snapshot.Workload{
				Instance:      fmt.Sprintf("%s-%d", svc, j),
				SPIFFEID:      "spiffe://trellis.local/ns/" + ns + "/sa/" + svc,
				Service:       svc,
				Namespace:     ns,
				AdvertiseAddr: fmt.Sprintf("10.%d.%d.%d:15006", i/250, i%250, j+1),
				Protocol:      "http",
				Labels:        map[string]string{"app": svc, "version": fmt.Sprintf("v%d", j)},
				Connected:     true,
				ConnectedAt:   at,
			})
		}
	}
	in.Policies = []snapshot.Policy{
		testPolicy(b, "ns0", "svc0-allow", "{service: svc0}"),
		testPolicy(b, "ns0", "ns0-allow", "{}"),
		testPolicy(b, "ns0", "v1-only", "{matchLabels: {version: v1}}"),
		testPolicy(b, "ns1", "svc1-allow", "{service: svc1}"),
		testPolicy(b, "trellis-system", "mesh-wide", "{}"),
	}
	return in
}

// BenchmarkBuildSnapshot1000Services builds one proxy's snapshot from
// scratch (the shared service list included) in a mesh of 1,000 services.
func BenchmarkBuildSnapshot1000Services(b *testing.B) {
	in := benchInput(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildSnapshot(in, in.Workloads[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildSnapshot1000ServicesPerProxy is the cost each further
// proxy adds to a push round: the shared part is built once per round.
func BenchmarkBuildSnapshot1000ServicesPerProxy(b *testing.B) {
	in := benchInput(b, 1000)
	v, err := snapshot.NewView(in)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := buildFromView(v, in.Workloads[i%len(in.Workloads)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// buildSnapshot builds w's snapshot from in, as one push round does.
func buildSnapshot(in snapshot.Input, w snapshot.Workload) (*pb.Snapshot, error) {
	v, err := snapshot.NewView(in)
	if err != nil {
		return nil, err
	}
	return snapshot.Build(v, &w)
}

// buildFromView builds one proxy's snapshot from a shared view.
func buildFromView(v *snapshot.View, w snapshot.Workload) (*pb.Snapshot, error) {
	return snapshot.Build(v, &w)
}

// The builder only copies VIPs it is given into the services.
func TestSnapshotServicesCarryVIPs(t *testing.T) {
	ws := []snapshot.Workload{
		{Instance: "c1", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006"},
		{Instance: "l1", Service: "ledger", Namespace: "shop"},
	}
	svcs := snapshot.WithVIPs(snapshot.ServicesOf(ws, nil), map[snapshot.ServiceKey]string{{Namespace: "shop", Name: "catalog"}: "240.240.0.7"})
	got := map[string]string{}
	for _, s := range svcs {
		got[s.GetName()] = s.GetVirtualIp()
	}
	if got["catalog"] != "240.240.0.7" || got["ledger"] != "" {
		t.Errorf("virtual IPs %v, want catalog 240.240.0.7 and ledger none", got)
	}
}

// The Mesh's tracing reaches proxies with the provider's address, and
// compiles into the rate.
func TestSnapshotTracing(t *testing.T) {
	in := testInput(t, testRoots(t))
	pct := 2.5
	in.Mesh.ExtensionProviders = []resource.ExtensionProvider{{Name: "jaeger", Opentelemetry: &resource.OpenTelemetryProvider{Service: "jaeger.observability", Port: 4317}}}
	in.Mesh.Tracing = &resource.MeshTracing{Provider: "jaeger", RandomSamplingPercentage: &pct}
	snap, err := buildSnapshot(in, in.Workloads[1])
	if err != nil {
		t.Fatal(err)
	}
	c, err := meshconfig.Compile(withVersion(snap))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	want := meshconfig.Tracing{Provider: "jaeger", Address: "jaeger.observability:4317", Rate: 0.025}
	if c.Tracing == nil || *c.Tracing != want {
		t.Errorf("tracing: got %+v, want %+v", c.Tracing, want)
	}
	if len(snap.GetMesh().GetExtAuthzProviders()) != 0 {
		t.Errorf("ext_authz providers: got %v, want none (an opentelemetry provider is not one)", snap.GetMesh().GetExtAuthzProviders())
	}
}
