package snapshot_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/resource"
)

// TestSnapshotConsistency feeds the builder inputs that disagree with
// themselves: the view must say what is wrong, and the consistent input
// must pass.
func TestSnapshotConsistency(t *testing.T) {
	roots := testRoots(t)
	for _, tc := range []struct {
		name   string
		change func(in *snapshot.Input)
		want   []string // each in the error; none: consistent
	}{
		{"consistent", func(*snapshot.Input) {}, nil},
		{"endpoint of another trust domain", func(in *snapshot.Input) {
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"service shop/frontend: endpoint 10.0.0.1:15006: SPIFFE ID spiffe://evil.example/ns/shop/sa/frontend is not in trust domain \"trellis.local\""}},
		{"endpoint without a SPIFFE ID", func(in *snapshot.Input) {
			in.Workloads[3].SPIFFEID = ""
		}, []string{"service billing/payments: endpoint 10.0.1.1:15006: SPIFFE ID \"\""}},
		{"endpoint ID not a SPIFFE ID", func(in *snapshot.Input) {
			in.Workloads[0].SPIFFEID = "https://trellis.local/ns/shop/sa/catalog"
		}, []string{"service shop/catalog: endpoint 10.0.0.3:15006: SPIFFE ID \"https://trellis.local/ns/shop/sa/catalog\""}},
		{"client-only proxy of another trust domain", func(in *snapshot.Input) {
			in.Workloads[1].AdvertiseAddr = ""
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"service shop/frontend: client-only proxy: SPIFFE ID spiffe://evil.example/ns/shop/sa/frontend is not in trust domain"}},
		{"service without a name", func(in *snapshot.Input) {
			in.Workloads[3].Service = ""
		}, []string{`service "billing/" without a name or namespace`}},
		{"idle service listed twice", func(in *snapshot.Input) {
			in.Idle = []snapshot.IdleService{{Namespace: "shop", Name: "ledger"}, {Namespace: "shop", Name: "ledger"}}
		}, []string{"service shop/ledger listed twice"}},
		{"virtual IP of a service not listed", func(in *snapshot.Input) {
			in.VIPs = map[snapshot.ServiceKey]string{{Namespace: "shop", Name: "ghost"}: "240.240.0.9"}
		}, []string{"virtual IP 240.240.0.9 given to service shop/ghost, which the snapshot does not list"}},
		{"one virtual IP for two services", func(in *snapshot.Input) {
			in.VIPs = map[snapshot.ServiceKey]string{{Namespace: "shop", Name: "catalog"}: "240.240.0.1", {Namespace: "shop", Name: "frontend"}: "240.240.0.1"}
		}, []string{"virtual IP 240.240.0.1 given to both shop/catalog and shop/frontend"}},
		{"virtual IP not an address", func(in *snapshot.Input) {
			in.VIPs = map[snapshot.ServiceKey]string{{Namespace: "shop", Name: "catalog"}: "240.240.0.300"}
		}, []string{`service shop/catalog: virtual IP "240.240.0.300" is not an IP address`}},
		{"policy listed twice", func(in *snapshot.Input) {
			in.Policies = append(in.Policies, in.Policies[0])
		}, []string{"policy shop/z-catalog-v2 listed twice"}},
		{"empty trust bundle", func(in *snapshot.Input) {
			in.TrustBundle = nil
		}, []string{"empty trust bundle"}},
		{"several problems", func(in *snapshot.Input) {
			in.TrustBundle = nil
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"empty trust bundle; service shop/frontend: endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, roots)
			tc.change(&in)
			v, err := snapshot.NewView(in)
			if err != nil {
				t.Fatalf("NewMeshView: %v", err)
			}
			err = v.Consistent()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Consistent = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Consistent = nil, want an error naming %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), "inconsistent snapshot: ") {
				t.Errorf("error %q, want it to start with %q", err, "inconsistent snapshot: ")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestSnapshotConsistencyPolicy: a stored policy a proxy would refuse (its
// name was never validated) keeps back exactly the snapshots that carry it.
func TestSnapshotConsistencyPolicy(t *testing.T) {
	bad, err := snapshot.PolicyFromObject(&resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: "Not_A_Name", Namespace: "shop"},
		Spec:       json.RawMessage(`{"selector": {"service": "catalog"}, "rules": [{"to": [{"methods": ["GET"]}]}]}`),
	})
	if err != nil {
		t.Fatalf("PolicyFromObject: %v (the spec is valid; only the name is not)", err)
	}
	in := testInput(t, testRoots(t))
	in.Policies = append(in.Policies, bad)
	v, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Consistent(); err != nil {
		t.Fatalf("Consistent = %v, want nil: the shared part is fine", err)
	}
	for _, tc := range []struct {
		w    int
		want string // "" when the snapshot is built
	}{
		{0, "inconsistent snapshot: policy shop/Not_A_Name: "}, // catalog v2
		{2, "inconsistent snapshot: policy shop/Not_A_Name: "}, // catalog v1
		{1, ""}, // frontend
		{3, ""}, // payments
	} {
		w := in.Workloads[tc.w]
		snap, err := buildFromView(v, w)
		switch {
		case tc.want == "" && (err != nil || snap == nil):
			t.Errorf("%s: BuildFromView = %v, %v; want a snapshot", w.Instance, snap, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "metadata.name")):
			t.Errorf("%s: BuildFromView error %v, want %q naming metadata.name", w.Instance, err, tc.want)
		case tc.want != "" && snap != nil:
			t.Errorf("%s: BuildFromView returned a snapshot with the error", w.Instance)
		}
	}
}
