package meshconfig

import "testing"

func TestOutboundModeOf(t *testing.T) {
	for in, want := range map[string]string{"": OutboundPassthrough, "passthrough": OutboundPassthrough, "block": OutboundBlock} {
		if got, err := outboundModeOf(in); err != nil || got != want {
			t.Errorf("outboundModeOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := outboundModeOf("drop"); err == nil {
		t.Error(`outboundModeOf("drop"): got no error`)
	}
}

func TestHeaderStrip(t *testing.T) {
	def := (*HeaderStrip)(nil)
	custom := NewHeaderStrip([]string{"X-Internal-*", "x-user"})
	for _, tc := range []struct {
		s     *HeaderStrip
		name  string
		strip bool
	}{
		{def, "X-Spiffe-Id", true}, {def, "x_spiffe_id", true}, {def, "X-Trellis-Anything", true}, {def, "X-Trellis-", true},
		{def, "X-Envoy-Peer-Metadata", true}, {def, "X-Envoy-Peer-Metadata-Id", true}, {def, "X-Spiffe-Idx", false},
		{def, "Authorization", false}, {def, "X-Trellis", false},
		{custom, "x-internal-role", true}, {custom, "X_USER", true}, {custom, "X-Spiffe-Id", false}, {custom, "x-users", false},
	} {
		if got := tc.s.Match(tc.name); got != tc.strip {
			t.Errorf("match(%q) = %v, want %v", tc.name, got, tc.strip)
		}
	}
}
