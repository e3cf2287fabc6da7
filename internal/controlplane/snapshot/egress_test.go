package snapshot_test

import (
	"slices"
	"testing"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/resource"
)

func testEgress(t *testing.T, ns, name, spec string) snapshot.Policy {
	t.Helper()
	objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: "+name+", namespace: "+ns+", labels: {team: a}}\nspec: "+spec+"\n"), "e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := snapshot.EgressPolicyFromObject(&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// EgressPolicies reach the proxies their selector and principals pick:
// one in trellis-system without a selector picks every workload, and
// principals narrow any of them to the identities they match.
func TestEgressPolicySelection(t *testing.T) {
	in := testInput(t, testRoots(t))
	in.EgressPolicies = []snapshot.Policy{
		testEgress(t, "shop", "catalog-psp", `{selector: {service: catalog}, hosts: [{name: api.psp.example, ports: [443]}]}`),
		testEgress(t, "trellis-system", "all", `{hosts: [{name: "*.s3.example"}]}`),
		testEgress(t, "trellis-system", "billing-only", `{principals: ["spiffe://trellis.local/ns/billing/*"], hosts: [{name: bank.example}]}`),
		testEgress(t, "billing", "frontend-in-billing", `{selector: {service: frontend}, hosts: [{name: x.example}]}`),
	}
	v, err := snapshot.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		w    int
		want []string
	}{
		{0, []string{"shop/catalog-psp", "trellis-system/all"}}, // catalog
		{1, []string{"trellis-system/all"}},                     // frontend
		{3, []string{"trellis-system/all", "trellis-system/billing-only"}},
	} {
		w := in.Workloads[tc.w]
		s, err := snapshot.Build(v, &w)
		if err != nil {
			t.Fatal(err)
		}
		c, err := meshconfig.Compile(withVersion(s))
		if err != nil {
			t.Fatalf("%s: snapshot does not compile: %v", w.Instance, err)
		}
		if got := c.Egress.Refs(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: egress policies %v, want %v", w.Instance, got, tc.want)
		}
	}
	// Without EgressPolicies, none reach the proxy (Egress nil: the
	// outbound mode decides).
	in.EgressPolicies = nil
	v, _ = snapshot.NewView(in)
	s, err := snapshot.Build(v, &in.Workloads[0])
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := meshconfig.Compile(withVersion(s)); !c.Egress.Empty() {
		t.Errorf("egress rules without EgressPolicies: %v", c.Egress.Refs())
	}
}
