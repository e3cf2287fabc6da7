package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// TestSnapshotConsistency feeds the builder inputs that disagree with
// themselves: the view must say what is wrong, and the consistent input
// must pass.
func TestSnapshotConsistency(t *testing.T) {
	roots := testRoots(t)
	for _, tc := range []struct {
		name   string
		change func(in *controlplane.SnapshotInput)
		want   []string // each in the error; none: consistent
	}{
		{"consistent", func(*controlplane.SnapshotInput) {}, nil},
		{"endpoint of another trust domain", func(in *controlplane.SnapshotInput) {
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"service shop/frontend: endpoint 10.0.0.1:15006: SPIFFE ID spiffe://evil.example/ns/shop/sa/frontend is not in trust domain \"trellis.local\""}},
		{"endpoint without a SPIFFE ID", func(in *controlplane.SnapshotInput) {
			in.Workloads[3].SPIFFEID = ""
		}, []string{"service billing/payments: endpoint 10.0.1.1:15006: SPIFFE ID \"\""}},
		{"endpoint ID not a SPIFFE ID", func(in *controlplane.SnapshotInput) {
			in.Workloads[0].SPIFFEID = "https://trellis.local/ns/shop/sa/catalog"
		}, []string{"service shop/catalog: endpoint 10.0.0.3:15006: SPIFFE ID \"https://trellis.local/ns/shop/sa/catalog\""}},
		{"client-only proxy of another trust domain", func(in *controlplane.SnapshotInput) {
			in.Workloads[1].AdvertiseAddr = ""
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"service shop/frontend: client-only proxy: SPIFFE ID spiffe://evil.example/ns/shop/sa/frontend is not in trust domain"}},
		{"service without a name", func(in *controlplane.SnapshotInput) {
			in.Workloads[3].Service = ""
		}, []string{`service "billing/" without a name or namespace`}},
		{"idle service listed twice", func(in *controlplane.SnapshotInput) {
			in.Idle = []controlplane.IdleService{{Namespace: "shop", Name: "ledger"}, {Namespace: "shop", Name: "ledger"}}
		}, []string{"service shop/ledger listed twice"}},
		{"virtual IP of a service not listed", func(in *controlplane.SnapshotInput) {
			in.VIPs = map[controlplane.ServiceKey]string{{Namespace: "shop", Name: "ghost"}: "240.240.0.9"}
		}, []string{"virtual IP 240.240.0.9 given to service shop/ghost, which the snapshot does not list"}},
		{"one virtual IP for two services", func(in *controlplane.SnapshotInput) {
			in.VIPs = map[controlplane.ServiceKey]string{{Namespace: "shop", Name: "catalog"}: "240.240.0.1", {Namespace: "shop", Name: "frontend"}: "240.240.0.1"}
		}, []string{"virtual IP 240.240.0.1 given to both shop/catalog and shop/frontend"}},
		{"virtual IP not an address", func(in *controlplane.SnapshotInput) {
			in.VIPs = map[controlplane.ServiceKey]string{{Namespace: "shop", Name: "catalog"}: "240.240.0.300"}
		}, []string{`service shop/catalog: virtual IP "240.240.0.300" is not an IP address`}},
		{"policy listed twice", func(in *controlplane.SnapshotInput) {
			in.Policies = append(in.Policies, in.Policies[0])
		}, []string{"policy shop/z-catalog-v2 listed twice"}},
		{"empty trust bundle", func(in *controlplane.SnapshotInput) {
			in.TrustBundle = nil
		}, []string{"empty trust bundle"}},
		{"several problems", func(in *controlplane.SnapshotInput) {
			in.TrustBundle = nil
			in.Workloads[1].SPIFFEID = "spiffe://evil.example/ns/shop/sa/frontend"
		}, []string{"empty trust bundle; service shop/frontend: endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, roots)
			tc.change(&in)
			v, err := controlplane.NewMeshView(in)
			if err != nil {
				t.Fatalf("NewMeshView: %v", err)
			}
			err = controlplane.Consistent(v)
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
	bad, err := controlplane.PolicyFromObject(&resource.Object{
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
	v, err := controlplane.NewMeshView(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := controlplane.Consistent(v); err != nil {
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
		snap, err := controlplane.BuildFromView(v, w)
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

// TestInconsistentSnapshotNotSent: on a real control plane, a stored policy
// no proxy could compile (written behind the admin API's back) is logged
// with what is wrong and counted, and the snapshot carrying it is never
// sent; the proxy's next snapshot is the first consistent one.
func TestInconsistentSnapshotNotSent(t *testing.T) {
	var logs lockedBuffer
	cp := cptest.StartControlPlane(t, controlplane.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", logs.String())
		}
	})
	catalog, first := connect(t, cp, workloadCert(t, cp, "shop", "catalog"), &pb.Hello{Instance: "catalog-1", Service: "catalog", Namespace: "shop"})
	catalog.ack(t, first)

	const badKey = "/resources/authorizationpolicies/shop/Not_A_Name"
	bad, err := json.Marshal(resource.Object{
		APIVersion: resource.APIVersion,
		Kind:       resource.KindAuthorizationPolicy,
		Metadata:   resource.Metadata{Name: "Not_A_Name", Namespace: "shop"},
		Spec:       json.RawMessage(`{"selector": {"service": "catalog"}, "rules": [{"to": [{"methods": ["GET"]}]}]}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cp.Store.Txn(ctx, store.Op{Type: store.OpPut, Key: badKey, Value: bad, IfModRevision: 0}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "trellis_control_inconsistent_snapshots_total", func() (bool, string) {
		n := controlMetric(t, cp, "trellis_control_inconsistent_snapshots_total")
		return n >= 1, fmt.Sprint(n)
	})
	for _, want := range []string{"failed the consistency check and is not sent", "instance=catalog-1", "policy shop/Not_A_Name: ", "metadata.name"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("control plane log lacks %q", want)
		}
	}

	// Barrier: the stream is ordered, so had the inconsistent snapshot been
	// sent, next would return it (and fail to compile it) before this one.
	if _, err := cp.Store.Txn(ctx, store.Op{Type: store.OpDelete, Key: badKey, IfModRevision: store.AnyRevision}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client(t).Apply(ctx, decode(t, policyYAML), false); err != nil {
		t.Fatal(err)
	}
	snap := catalog.next(t)
	if got := string(bytes.Join(snap.GetPolicies(), nil)); !strings.Contains(got, "frontend-reads-catalog") || strings.Contains(got, "Not_A_Name") {
		t.Errorf("next snapshot's policies %s, want frontend-reads-catalog only", got)
	}
}

// lockedBuffer is a log destination tests read while servers write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
