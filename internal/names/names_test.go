package names_test

import (
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/names"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(string) bool
		ok    []string
		bad   []string
	}{
		{"DNS label", names.IsDNSLabel,
			[]string{"a", "shop", "catalog-v2", "0", "9lives", strings.Repeat("a", 63)},
			[]string{"", "Shop", "-a", "a-", "a.b", "a_b", "ä", "a b", strings.Repeat("a", 64)}},
		{"DNS subdomain", names.IsDNSSubdomain,
			[]string{"a", "app.example.com", "x-1.y", strings.Repeat("a.", 126) + "a"},
			[]string{"", ".a", "a.", "a..b", "A.b", "a_b.c", strings.Repeat("a.", 127) + "a"}},
		{"label key", names.IsLabelKey,
			[]string{"app", "App_1.x", "app.example.com/tier", "a/B"},
			[]string{"", "/a", "a/", "Example.com/a", "a/b/c", "-a", "a b", strings.Repeat("a", 64)}},
		{"label value", names.IsLabelValue,
			[]string{"", "v2", "V_2.x-y", strings.Repeat("a", 63)},
			[]string{"-v", "v-", "v/2", "v 2", strings.Repeat("a", 64)}},
		{"HTTP token", names.IsHTTPToken,
			[]string{"GET", "get", "x-tenant", "X_Custom.1", "!#$%&'*+-.^_`|~"},
			[]string{"", "a b", "a:b", "a/b", "(x)", "é", "a\x00"}},
	} {
		for _, s := range tc.ok {
			if !tc.check(s) {
				t.Errorf("%s %q: got false, want true", tc.name, s)
			}
		}
		for _, s := range tc.bad {
			if tc.check(s) {
				t.Errorf("%s %q: got true, want false", tc.name, s)
			}
		}
	}
}
