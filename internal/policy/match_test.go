package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"pgregory.net/rapid"

	"github.com/trellismesh/trellis/internal/resource"
)

// TestLongLists checks lists long enough to be matched through a map
// against the reference glob, hosts (case-insensitive) included.
func TestLongLists(t *testing.T) {
	var values []string
	for i := range 40 {
		values = append(values, fmt.Sprintf("v%d.Shop", i))
	}
	entries := append(slices.Clone(values), "v1*", "*.SHOP", "*", "x*", "*y")
	rapid.Check(t, func(t *rapid.T) {
		list := rapid.SliceOfNDistinct(rapid.SampledFrom(entries), 0, 30, rapid.ID).Draw(t, "list")
		fold := rapid.Bool().Draw(t, "fold")
		ps := compilePatterns(list, fold, true)
		exact := 0
		for _, s := range list {
			if !strings.Contains(s, "*") {
				exact++
			}
		}
		if (ps.set != nil) != (exact >= setThreshold) {
			t.Fatalf("%d exact entries, set %v", exact, ps.set != nil)
		}
		for _, v := range append(values, "V3.SHOP", "v3.shop", "y", "v1", "other") {
			want := slices.ContainsFunc(list, func(p string) bool { return refGlob(p, v, fold) })
			if got := ps.match(v); got != want {
				t.Fatalf("list %q fold=%v: match(%q) = %v, want %v", list, fold, v, got, want)
			}
		}
	})
}

func TestNamespaceOf(t *testing.T) {
	for _, tc := range []struct{ principal, td, want string }{
		{"spiffe://trellis.local/ns/shop/sa/frontend", "trellis.local", "shop"},
		{"spiffe://trellis.local/ns/shop/sa/frontend", "", "shop"},
		{"spiffe://partner.org/ns/shop/sa/frontend", "trellis.local", ""},
		{"spiffe://partner.org/ns/shop/sa/frontend", "", "shop"},
		{"spiffe://trellis.local/ns/shop/sa/frontend/x", "", ""},
		{"spiffe://trellis.local/ns/shop/sa/", "", ""},
		{"spiffe://trellis.local/ns//sa/x", "", ""},
		{"spiffe://trellis.local/ns/a/b/sa/x", "", ""},
		{"spiffe://trellis.local/sa/x", "", ""},
		{"spiffe://trellis.local", "", ""},
		{"trellis.local/ns/shop/sa/x", "", ""},
		{"", "", ""},
	} {
		if got := namespaceOf(tc.principal, tc.td); got != tc.want {
			t.Errorf("namespaceOf(%q, %q) = %q, want %q", tc.principal, tc.td, got, tc.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	good := mustPolicies(t, "shop/a: {rules: [{}]}")[0]
	other := good
	other.Kind = resource.KindMesh
	unnamed := good
	unnamed.Metadata.Name = ""
	badSpec := good
	badSpec.Metadata.Name = "bad"
	badSpec.Spec = json.RawMessage(`{"action":"MAYBE"}`)
	for _, tc := range []struct {
		name string
		objs []resource.Object
		want []string
	}{
		{"duplicate", []resource.Object{good, good}, []string{"shop/a: defined twice"}},
		{"other kind", []resource.Object{other}, []string{"is not an AuthorizationPolicy"}},
		{"no name", []resource.Object{unnamed}, []string{"metadata.name is required"}},
		{"every bad object is named", []resource.Object{badSpec, good, unnamed}, []string{"shop/bad", "spec.action", "metadata.name is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Compile(tc.objs, Options{})
			if err == nil {
				t.Fatalf("Compile succeeded with %d policies", e.Len())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "policy.Compile: ") {
				t.Errorf("error %q lacks the operation prefix", err)
			}
		})
	}
}

func TestCompileDefaultsNamespace(t *testing.T) {
	o := mustPolicies(t, "default/a: {rules: [{}]}")[0]
	o.Metadata.Namespace = ""
	e, err := Compile([]resource.Object{o}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Selecting(&Workload{Namespace: resource.DefaultNamespace, Service: "x"}); !slices.Equal(got, []string{"default/a"}) {
		t.Errorf("Selecting = %q", got)
	}
}

func TestConcurrentDecide(t *testing.T) {
	e, err := Compile(benchMesh(t, 100), Options{TrustDomain: "trellis.local"})
	if err != nil {
		t.Fatal(err)
	}
	w, r := benchTarget(100)
	want := e.Decide(&w, &r)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got := e.Decide(&w, &r); got != want {
					t.Errorf("got %+v, want %+v", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
