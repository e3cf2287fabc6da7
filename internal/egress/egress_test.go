package egress

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

func TestMatchHost(t *testing.T) {
	ip := netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		name, host string
		want       bool
	}{
		{"api.psp.example", "api.psp.example", true},
		{"api.psp.example", "x.api.psp.example", false},
		{"api.psp.example", "psp.example", false},
		{"api.psp.example", "", false},
		{"*.s3.example", "bucket.s3.example", true},
		{"*.s3.example", "a.b.s3.example", true},
		{"*.s3.example", "s3.example", false}, // not the domain itself (as Istio)
		{"*.s3.example", "evils3.example", false},
		{"*.s3.example", "s3.example.evil", false},
		{"*.s3.example", "", false},
		{"*", "anything.example", true},
		{"*", "", true},
		{"203.0.113.7", "", true},
		{"203.0.113.7", "named.example", true}, // IP entries match the address, whatever the name
		{"203.0.113.8", "", false},
		{"203.0.113.8", "203.0.113.8", false}, // a Host naming the IP is not the address
	} {
		if got := MatchHost(tc.name, tc.host, ip); got != tc.want {
			t.Errorf("MatchHost(%q, %q): got %v, want %v", tc.name, tc.host, got, tc.want)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"API.PSP.Example":        "api.psp.example",
		"api.psp.example:443":    "api.psp.example",
		"api.psp.example.":       "api.psp.example",
		"api.psp.example.:8080":  "api.psp.example",
		"api.psp.example:":       "api.psp.example",
		"203.0.113.7":            "203.0.113.7",
		"203.0.113.7:80":         "203.0.113.7",
		"[2001:DB8::1]:443":      "2001:db8::1",
		"[2001:db8::1]":          "2001:db8::1",
		"2001:db8::1":            "2001:db8::1",
		"::ffff:203.0.113.7":     "203.0.113.7",
		"":                       "",
		"a b":                    "",
		"api.example:https":      "",
		"[2001:db8::1":           "",
		"[fe80::1%eth0]":         "",
		".example":               "",
		"a..example":             "",
		"0..":                    "",
		"api.example..":          "",
		"api.example:443:443":    "",
		"host/path":              "",
		"user@api.psp.example":   "",
		"api.psp.example\x00.ev": "",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustPolicy(t *testing.T, ns, yamlSpec string) Policy {
	t.Helper()
	objs, err := resource.Decode([]byte("apiVersion: trellis.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: p, namespace: "+ns+"}\nspec: "+yamlSpec+"\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := FromObject(&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecide(t *testing.T) {
	psp := mustPolicy(t, "shop", `{selector: {service: payments}, hosts: [{name: api.psp.example, ports: [443]}, {name: "*.s3.example"}]}`)
	r := NewRules([]Policy{psp})
	dst := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), port) }
	for _, tc := range []struct {
		host  string
		port  uint16
		allow bool
		entry string
	}{
		{"api.psp.example", 443, true, "api.psp.example"},
		{"api.psp.example", 80, false, ""},
		{"b.s3.example", 80, true, "*.s3.example"},
		{"b.s3.example", 9999, true, "*.s3.example"},
		{"s3.example", 443, false, ""},
		{"other.example", 443, false, ""},
		{"", 443, false, ""},
	} {
		d := r.Decide(tc.host, dst(tc.port))
		if d.Allow != tc.allow || d.Entry != tc.entry || (d.Allow && d.Policy != "shop/p") {
			t.Errorf("Decide(%q, %d) = %+v, want allow %v entry %q", tc.host, tc.port, d, tc.allow, tc.entry)
		}
	}
	if d := r.Decide("", dst(443)); d.Host != "198.51.100.1" {
		t.Errorf("no name: host %q, want the destination address", d.Host)
	}
	var none *Rules
	if !none.Empty() || none.Decide("api.psp.example", dst(443)).Allow {
		t.Error("nil rules: want empty and denying")
	}
}

func TestSelects(t *testing.T) {
	payments := &policy.Workload{Namespace: "shop", Service: "payments"}
	const id = "spiffe://trellis.local/ns/shop/sa/payments"
	for _, tc := range []struct {
		ns, spec string
		want     bool
	}{
		{"shop", `{selector: {service: payments}, hosts: [{name: a.example}]}`, true},
		{"shop", `{hosts: [{name: a.example}]}`, true},
		{"shop", `{selector: {service: catalog}, hosts: [{name: a.example}]}`, false},
		{"other", `{hosts: [{name: a.example}]}`, false},
		{"trellis-system", `{hosts: [{name: a.example}]}`, true}, // mesh-wide
		{"trellis-system", `{selector: {service: payments}, hosts: [{name: a.example}]}`, false},
		{"shop", `{principals: ["spiffe://trellis.local/ns/shop/*"], hosts: [{name: a.example}]}`, true},
		{"trellis-system", `{principals: ["spiffe://trellis.local/ns/billing/*"], hosts: [{name: a.example}]}`, false},
		{"trellis-system", `{principals: ["*/sa/payments"], hosts: [{name: a.example}]}`, true},
	} {
		p := mustPolicy(t, tc.ns, tc.spec)
		if got := Selects(&p, payments, id); got != tc.want {
			t.Errorf("%s %s: got %v, want %v", tc.ns, tc.spec, got, tc.want)
		}
	}
}

// FuzzNormalizeHost: whatever a client sends as SNI or Host, the result
// is empty or a normalized host that normalizes to itself, matches
// itself as an exact entry, and never matches a wildcard it does not end
// with.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"API.psp.example:443", "[2001:db8::1]:80", "a..b", "x.s3.example.", "203.0.113.7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := NormalizeHost(s)
		if h == "" {
			return
		}
		if again := NormalizeHost(h); again != h {
			t.Fatalf("NormalizeHost(%q) = %q, but NormalizeHost(%q) = %q", s, h, h, again)
		}
		if _, err := netip.ParseAddr(h); err != nil && !MatchHost(h, h, netip.Addr{}) {
			t.Fatalf("%q does not match itself", h)
		}
		if MatchHost("*.s3.example", h, netip.Addr{}) && !strings.HasSuffix(h, ".s3.example") {
			t.Fatalf("%q matched *.s3.example", h)
		}
	})
}
