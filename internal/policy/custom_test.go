package policy

import (
	"slices"
	"testing"
)

// CUSTOM policies take no part in the local decision; AppendCustom lists
// those selecting the workload whose rules match, in evaluation order,
// and a not-list on a missing attribute holds in them (as in DENY).
func TestCustomPolicies(t *testing.T) {
	pols := mustPolicies(t,
		`shop/a-ext-admin: {selector: {service: catalog}, action: CUSTOM, provider: {name: opa}, rules: [{to: [{paths: ["/admin*"]}]}]}`,
		`shop/b-ext-all: {action: CUSTOM, provider: {name: audit-svc}, rules: [{from: [{notPrincipals: ["spiffe://trellis.local/ns/shop/sa/robot"]}]}]}`,
		`shop/reads: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}`,
	)
	e, err := Compile(pols, Options{TrustDomain: "trellis.local"})
	if err != nil {
		t.Fatal(err)
	}
	if !e.HasCustom() {
		t.Fatal("HasCustom: got false, want true")
	}
	catalog := Workload{Namespace: "shop", Service: "catalog"}
	cart := Workload{Namespace: "shop", Service: "cart"}
	for _, tc := range []struct {
		name  string
		w     Workload
		r     Request
		allow bool
		want  []string
	}{
		{"admin path asks both", catalog, Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/admin/x"}, true, []string{"shop/a-ext-admin:opa", "shop/b-ext-all:audit-svc"}},
		{"robot on admin asks opa", catalog, Request{Principal: "spiffe://trellis.local/ns/shop/sa/robot", HTTP: true, Method: "GET", Path: "/admin"}, true, []string{"shop/a-ext-admin:opa"}},
		{"plaintext caller matches the not-list", catalog, Request{HTTP: true, Method: "GET", Path: "/"}, true, []string{"shop/b-ext-all:audit-svc"}},
		{"local deny still lists", catalog, Request{Principal: frontend, HTTP: true, Method: "POST", Path: "/admin"}, false, []string{"shop/a-ext-admin:opa", "shop/b-ext-all:audit-svc"}},
		// Only a CUSTOM policy selects cart: the mesh default decides locally.
		{"custom is no ALLOW", cart, Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/"}, false, []string{"shop/b-ext-all:audit-svc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := e.Decide(&tc.w, &tc.r); d.Allow != tc.allow {
				t.Errorf("Decide: got allow=%v (%s), want %v", d.Allow, d.Reason, tc.allow)
			}
			var got []string
			for _, m := range e.AppendCustom(nil, &tc.w, &tc.r) {
				got = append(got, m.Policy+":"+m.Provider)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("AppendCustom: got %q, want %q", got, tc.want)
			}
		})
	}
	open, err := Compile(pols, Options{TrustDomain: "trellis.local", DefaultAllow: true})
	if err != nil {
		t.Fatal(err)
	}
	tcp := Request{Principal: frontend}
	if d := open.Decide(&cart, &tcp); d.Allow || d.Policy != "shop/b-ext-all" {
		t.Errorf("TCP matched by a CUSTOM policy: got %+v, want denied by it", d)
	}
	robot := Request{Principal: "spiffe://trellis.local/ns/shop/sa/robot"}
	if d := open.Decide(&cart, &robot); !d.Allow {
		t.Errorf("TCP no CUSTOM policy matches: got %+v, want the mesh default", d)
	}
	if got := e.Selecting(&cart); !slices.Equal(got, []string{"shop/b-ext-all"}) {
		t.Errorf("Selecting: got %q, want the CUSTOM policy", got)
	}
}

func TestAppendCustomDoesNotAllocate(t *testing.T) {
	pols := mustPolicies(t, `shop/ext: {selector: {service: catalog}, action: CUSTOM, provider: {name: opa}, rules: [{to: [{paths: ["/admin*"]}]}]}`)
	e, err := Compile(pols, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := Workload{Namespace: "shop", Service: "catalog"}
	r := Request{Principal: frontend, HTTP: true, Method: "GET", Path: "/admin"}
	buf := make([]CustomMatch, 0, 2)
	if n := testing.AllocsPerRun(100, func() { buf = e.AppendCustom(buf[:0], &w, &r) }); n != 0 {
		t.Errorf("allocs: got %v, want 0", n)
	}
}
