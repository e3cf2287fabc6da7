package policy

import (
	"strings"
	"testing"
	"time"
)

func TestCanonicalPath(t *testing.T) {
	for _, tc := range []struct {
		raw, strict, decode string // "!" means refused
	}{
		{"", "/", "/"},
		{"/", "/", "/"},
		{"/items", "/items", "/items"},
		{"/items/", "/items/", "/items/"},
		{"items", "/items", "/items"},
		{"/a//b", "/a/b", "/a/b"},
		{"/a/./b/../c", "/a/c", "/a/c"},
		{"/public/../admin", "/admin", "/admin"},
		{"/public/%2e%2e/admin", "/admin", "/admin"},
		{"/public/%2E%2E/admin", "/admin", "/admin"},
		{"/%41dmin", "/Admin", "/Admin"},
		{"/a%20b", "/a b", "/a b"},
		{"/a%25b", "/a%b", "/a%b"},
		{"/public/..%5cadmin", "!", "/admin"},
		{"/public/..%5Cadmin", "!", "/admin"},
		{`/public/..\admin`, "!", "/admin"},
		{"/public/..%2fadmin", "!", "/admin"},
		{"/a%2Fb", "!", "/a/b"},
		{"/public/..;/admin", "!", "!"},
		{"/public/..%3b/admin", "!", "!"},
		{"/public/..%3B/admin", "!", "!"},
		{"/public/.;x/admin", "!", "!"},
		{"/public;v=1/items", "/public;v=1/items", "/public;v=1/items"},
		{"/public/%252e%252e/admin", "!", "!"},
		{"/public/%252f", "!", "!"},
		{"/public/%255c", "!", "!"},
		{"/public/%25%32%65%25%32%65/admin", "!", "!"},
		{"/public/%2541", "/public/%41", "/public/%41"},
		{"/a%00b", "!", "!"},
		{"/a%3fb", "!", "!"},
		{"/a%23b", "!", "!"},
		{"/a#b", "!", "!"},
		{"/a%zz", "!", "!"},
		{"/a%4", "!", "!"},
		{"/public/ADMIN", "/public/ADMIN", "/public/ADMIN"},
	} {
		for _, m := range []struct {
			mode PathMode
			want string
		}{{PathStrict, tc.strict}, {PathDecodeSlashes, tc.decode}} {
			got, err := CanonicalPath(tc.raw, m.mode)
			if err != nil {
				if !IsPathError(err) {
					t.Errorf("CanonicalPath(%q, %d): error %v is not a PathError", tc.raw, m.mode, err)
				}
				got = "!"
			}
			if got != m.want {
				t.Errorf("CanonicalPath(%q, %d) = %q (%v), want %q", tc.raw, m.mode, got, err, m.want)
			}
		}
	}
}

// A canonical path is a fixed point: canonicalizing it again changes
// nothing, so what a policy matched is what the app routes.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", `/a\b`, "/a;b/..;/c", "/%252e", "//x//", "/a%25%32%65"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, mode := range []PathMode{PathStrict, PathDecodeSlashes} {
			p, err := CanonicalPath(raw, mode)
			if err != nil {
				continue
			}
			if p == "" || p[0] != '/' {
				t.Fatalf("CanonicalPath(%q) = %q: not absolute", raw, p)
			}
			if strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") {
				t.Fatalf("CanonicalPath(%q) = %q: not normalized", raw, p)
			}
			if strings.ContainsAny(p, "\\\x00?#") {
				t.Fatalf("CanonicalPath(%q) = %q: separator look-alike left", raw, p)
			}
		}
	})
}

// A rule with pathsIgnoreCase matches paths whatever their case, in
// ALLOW and DENY policies alike; without it, paths are case-sensitive.
func TestPathsIgnoreCase(t *testing.T) {
	e, err := Compile(mustPolicies(t,
		"shop/no-admin: {selector: {service: catalog}, action: DENY, rules: [{to: [{paths: [/admin, /admin/*], pathsIgnoreCase: true}]}]}",
		"shop/public: {selector: {service: catalog}, rules: [{to: [{paths: [/public/*], pathsIgnoreCase: true}, {paths: [/Exact]}]}]}",
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path  string
		allow bool
	}{
		{"/public/x", true}, {"/PUBLIC/x", true}, {"/Public/X", true},
		{"/admin", false}, {"/ADMIN", false}, {"/Admin/users", false}, {"/public/ADMIN", true},
		{"/Exact", true}, {"/exact", false}, {"/EXACT", false},
	} {
		r := get(frontend, tc.path)
		if got := e.Decide(&catalog, &r); got.Allow != tc.allow {
			t.Errorf("GET %s: allow = %v (%s), want %v", tc.path, got.Allow, got.Reason, tc.allow)
		}
	}
}

// lint does not call a case-insensitive rule shadowed by a case-sensitive
// one on the same paths: removing it would let /ADMIN through.
func TestLintPathsIgnoreCaseNotShadowed(t *testing.T) {
	findings := Lint(mustPolicies(t,
		"shop/allow-admin: {selector: {service: catalog}, rules: [{to: [{paths: [/admin]}]}, {to: [{paths: [/admin], pathsIgnoreCase: true}]}]}",
	), nil, time.Now(), "trellis.local")
	for _, f := range findings {
		if f.Kind == "shadowed" || strings.Contains(f.Message, "shadow") {
			t.Errorf("unexpected finding: %+v", f)
		}
	}
	findings = Lint(mustPolicies(t,
		"shop/allow-admin: {selector: {service: catalog}, rules: [{to: [{paths: [/admin], pathsIgnoreCase: true}]}, {to: [{paths: [/admin], pathsIgnoreCase: true}]}]}",
	), nil, time.Now(), "trellis.local")
	if len(findings) == 0 {
		t.Errorf("two identical case-insensitive rules: no finding, want one shadowed")
	}
}
