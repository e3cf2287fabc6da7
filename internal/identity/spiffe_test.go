package identity_test

import (
	"testing"

	"github.com/trellismesh/trellis/internal/identity"
)

func TestParseWorkloadID(t *testing.T) {
	for _, tc := range []struct {
		in     string
		ns, sa string // empty means an error is wanted
	}{
		{"spiffe://example.org/ns/shop/sa/web", "shop", "web"},
		{"spiffe://example.org/ns/trellis-system/sa/control", "trellis-system", "control"},
		{"spiffe://td/ns/NS/sa/SA", "NS", "SA"},
		{"spiffe://example.org/ns/a.b_c-d/sa/e.f", "a.b_c-d", "e.f"},
		{"spiffe://mesh.internal:8443/ns/shop/sa/web", "", ""}, // ports are not allowed in trust domains
		{"", "", ""},
		{"web", "", ""},
		{"https://example.org/ns/shop/sa/web", "", ""},
		{"spiffe://", "", ""},
		{"spiffe:///ns/shop/sa/web", "", ""},
		{"spiffe://example.org", "", ""},
		{"spiffe://example.org/", "", ""},
		{"spiffe://example.org/ns/shop", "", ""},
		{"spiffe://example.org/ns/shop/sa", "", ""},
		{"spiffe://example.org/ns/shop/sa/", "", ""},
		{"spiffe://example.org/ns/shop/sa/web/", "", ""},
		{"spiffe://example.org/ns/shop/sa/web/extra", "", ""},
		{"spiffe://example.org/sa/web/ns/shop", "", ""},
		{"spiffe://example.org/NS/shop/SA/web", "", ""},
		{"spiffe://example.org/ns/shop/account/web", "", ""},
		{"spiffe://example.org/namespace/shop/sa/web", "", ""},
		{"spiffe://example.org/ns//sa/web", "", ""},
		{"spiffe://example.org/ns/../sa/web", "", ""},
		{"spiffe://example.org/ns/./sa/web", "", ""},
		{"spiffe://Example.org/ns/shop/sa/web", "", ""},
		{"spiffe://user@example.org/ns/shop/sa/web", "", ""},
		{"spiffe://example.org/ns/shop/sa/web?x=1", "", ""},
		{"spiffe://example.org/ns/shop/sa/web#frag", "", ""},
		{"spiffe://example.org/ns/sh%2Fop/sa/web", "", ""},
		{"SPIFFE://example.org/ns/shop/sa/web", "", ""},
	} {
		id, ns, sa, err := identity.ParseWorkloadID(tc.in)
		if tc.ns == "" {
			if err == nil {
				t.Errorf("ParseWorkloadID(%q) = %v, %q, %q, nil; want error", tc.in, id, ns, sa)
			}
			if !id.IsZero() || ns != "" || sa != "" {
				t.Errorf("ParseWorkloadID(%q) returned %v, %q, %q alongside an error", tc.in, id, ns, sa)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseWorkloadID(%q): %v", tc.in, err)
			continue
		}
		if id.String() != tc.in || ns != tc.ns || sa != tc.sa {
			t.Errorf("ParseWorkloadID(%q) = %v, %q, %q; want %s, %q, %q", tc.in, id, ns, sa, tc.in, tc.ns, tc.sa)
		}
	}
}

func TestWorkloadID(t *testing.T) {
	for _, tc := range []struct {
		ns, sa string
		want   string // empty means an error is wanted
	}{
		{"shop", "web", "spiffe://example.org/ns/shop/sa/web"},
		{"trellis-system", "control", "spiffe://example.org/ns/trellis-system/sa/control"},
		{"", "web", ""},
		{"shop", "", ""},
		{"sh/op", "web", ""},
		{"shop", "..", ""},
		{"shop", ".", ""},
		{"shop", "w%b", ""},
	} {
		id, err := identity.WorkloadID(td, tc.ns, tc.sa)
		if tc.want == "" {
			if err == nil {
				t.Errorf("WorkloadID(%q, %q) = %v, nil error; want error", tc.ns, tc.sa, id)
			}
			continue
		}
		if err != nil || id.String() != tc.want {
			t.Errorf("WorkloadID(%q, %q) = %v, %v; want %s", tc.ns, tc.sa, id, err, tc.want)
			continue
		}
		// Every WorkloadID parses back to its parts.
		_, ns, sa, err := identity.ParseWorkloadID(id.String())
		if err != nil || ns != tc.ns || sa != tc.sa {
			t.Errorf("ParseWorkloadID(WorkloadID(%q, %q)) = %q, %q, %v", tc.ns, tc.sa, ns, sa, err)
		}
	}
}

func TestControlPlaneID(t *testing.T) {
	if got, want := identity.ControlPlaneID(td).String(), "spiffe://example.org/ns/trellis-system/sa/control"; got != want {
		t.Errorf("ControlPlaneID = %q, want %q", got, want)
	}
	if got, want := identity.ControlPlaneID(otherTD).String(), "spiffe://other.example/ns/trellis-system/sa/control"; got != want {
		t.Errorf("ControlPlaneID = %q, want %q", got, want)
	}
}
