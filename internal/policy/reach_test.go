package policy_test

import (
	"slices"
	"testing"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

func TestReach(t *testing.T) {
	front := policy.Caller{Principal: "spiffe://trellis.local/ns/shop/sa/frontend", Namespace: "shop", Service: "frontend"}
	evil := policy.Caller{Principal: "spiffe://trellis.local/ns/attic/sa/evil", Namespace: "attic", Service: "evil"}
	for _, tc := range []struct {
		name                        string
		rules                       []resource.Rule
		anyone, front, evil, byName bool
		names                       string // a service NamesService must match
		exact                       bool
	}{
		{name: "no from admits anyone", rules: []resource.Rule{{To: []resource.Operation{{Methods: []string{"GET"}}}}},
			anyone: true, front: true, evil: true},
		{name: "only a not-list admits anyone (over-approximation)", rules: []resource.Rule{{From: []resource.Source{{NotServices: []string{"evil"}}}}},
			anyone: true, front: true, evil: true, names: "evil"},
		{name: "by service", rules: []resource.Rule{{From: []resource.Source{{Services: []string{"frontend"}}}}},
			front: true, byName: true, names: "frontend", exact: true},
		{name: "by principal prefix", rules: []resource.Rule{{From: []resource.Source{{Principals: []string{"spiffe://trellis.local/ns/shop/*"}}}}},
			front: true, byName: true},
		{name: "by namespace and service, both must match", rules: []resource.Rule{{From: []resource.Source{{Namespaces: []string{"attic"}, Services: []string{"frontend"}}}}},
			names: "frontend", exact: true},
		{name: "a star is no name", rules: []resource.Rule{{From: []resource.Source{{Principals: []string{"*"}}}}},
			front: true, evil: true},
	} {
		spec := resource.AuthorizationPolicySpec{Rules: tc.rules}
		r := policy.CompileReach(&spec)
		if r.Anyone() != tc.anyone || r.MayAdmit(front) != tc.front || r.MayAdmit(evil) != tc.evil || r.AdmitsByName(front) != tc.byName {
			t.Errorf("%s: anyone %v admits frontend %v evil %v by name %v; want %v %v %v %v", tc.name,
				r.Anyone(), r.MayAdmit(front), r.MayAdmit(evil), r.AdmitsByName(front), tc.anyone, tc.front, tc.evil, tc.byName)
		}
		if tc.names != "" && !r.NamesService(tc.names) {
			t.Errorf("%s: NamesService(%s) false", tc.name, tc.names)
		}
		if r.NamesService("payments") {
			t.Errorf("%s: NamesService(payments) true", tc.name)
		}
		_, services, _, ok := r.ExactKeys()
		if ok != tc.exact || (ok && !slices.Contains(services, "frontend")) {
			t.Errorf("%s: ExactKeys services %v ok %v, want ok %v", tc.name, services, ok, tc.exact)
		}
	}
}
