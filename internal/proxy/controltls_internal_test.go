package proxy

import (
	"slices"
	"testing"
)

func TestCollectorAccounts(t *testing.T) {
	const control, external = "cp:15012", "collector:15013"
	const failover, second = "trellis-control:///cp:15012,cp-b:15012", "cp-b:15012"
	controls := []string{failover, control, second}
	for _, tt := range []struct {
		flag, addr string
		want       []string
	}{
		{"", control, []string{saControl}},
		{"", failover, []string{saControl}},
		{"", second, []string{saControl}},
		{"", external, []string{saCollector}},
		{external, external, []string{saControl, saCollector}},
		{control, control, []string{saControl, saCollector}},
	} {
		if got := collectorAccounts(tt.flag, controls, tt.addr); !slices.Equal(got, tt.want) {
			t.Errorf("--collector %q, dialing %s: got %v, want %v", tt.flag, tt.addr, got, tt.want)
		}
	}
}
