package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRunClassifiesErrors(t *testing.T) {
	tests := []struct {
		name, stderr string
		code         string
		want         error
		wantText     string
	}{
		{"nft not root", "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)", "4", ErrPermission, "CAP_NET_ADMIN"},
		{"legacy lock", "Fatal: can't open lock file /run/xtables.lock: Permission denied", "4", ErrPermission, "as root"},
		{"no nat table", "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'\nTable does not exist (do you need to insmod?)", "1", nil, "modprobe iptable_nat"},
		{"other", "iptables-restore: line 3 failed", "1", nil, "line 3 failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := &tool{version: "iptables v1.8.9 (test)"}
			_, err := tl.run(context.Background(), "", "sh", "-c", `printf '%s\n' "$1" >&2; exit "$2"`, "sh", tt.stderr, tt.code)
			if err == nil {
				t.Fatal("run succeeded, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("run error %q is not %v", err, tt.want)
			}
			if tt.want == nil && errors.Is(err, ErrPermission) {
				t.Errorf("run error %q is ErrPermission, want not", err)
			}
			for _, s := range []string{tt.wantText, "iptables v1.8.9 (test)"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("run error %q does not mention %q", err, s)
				}
			}
		})
	}
}
