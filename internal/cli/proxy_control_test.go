package cli

import (
	"testing"
)

// --control takes several addresses, repeated or comma-separated, in
// order; the first one given replaces the default.
func TestProxyControlFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "127.0.0.1:15012"},
		{[]string{"--control", "10.0.0.1:15012"}, "10.0.0.1:15012"},
		{[]string{"--control", "10.0.0.1:15012", "--control", "10.0.0.2:15012"}, "10.0.0.1:15012,10.0.0.2:15012"},
		{[]string{"--control", "10.0.0.1:15012, 10.0.0.2:15012", "--control", "cp-c.example:15012"}, "10.0.0.1:15012,10.0.0.2:15012,cp-c.example:15012"},
	} {
		cmd := newProxyCmd()
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if got := cmd.Flags().Lookup("control").Value.String(); got != tt.want {
			t.Errorf("%q: --control %q, want %q", tt.args, got, tt.want)
		}
	}
}
