package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// A --control list the proxy cannot use stops it at start, naming the
// value.
func TestProxyControlFlagRefused(t *testing.T) {
	clearEnv(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("not-checked-yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"proxy", "--service", "web", "--ca-file", "ca.crt", "--token-file", token}
	for _, tc := range []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"--control", "15012"}, `--control "15012": want HOST:PORT`},
		{[]string{"--control", "10.0.0.1:15012,"}, `--control "": want HOST:PORT`},
		{[]string{"--control", "10.0.0.1:15012", "--control", "cp-b:15012,10.0.0.1:15012"}, `--control "10.0.0.1:15012" is listed twice`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, "", append(base, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant exit %d, no stdout, stderr containing %q", r, cli.ExitUser, tc.wantStderr)
			}
		})
	}
}
