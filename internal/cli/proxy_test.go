package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// Telemetry flags out of range stop the proxy before it touches the
// network, with an error naming the flag.
func TestProxyTelemetryFlags(t *testing.T) {
	clearEnv(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("not-checked-yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"proxy", "--service", "web", "--ca-file", "ca.crt", "--token-file", token}
	for _, tc := range []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"sample rate above 1", []string{"--access-log-sample-rate", "1.5"}, "--access-log-sample-rate 1.5: want a fraction from 0 (off) to 1"},
		{"negative sample rate", []string{"--access-log-sample-rate", "-0.1"}, "--access-log-sample-rate -0.1: want a fraction"},
		{"sample rate NaN", []string{"--access-log-sample-rate", "NaN"}, "--access-log-sample-rate NaN: want a fraction"},
		{"stats interval below 1s", []string{"--stats-interval", "500ms"}, "--stats-interval 500ms: want at least 1s"},
		{"collector not host:port", []string{"--collector", "collector.example"}, `--collector "collector.example": want HOST:PORT`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", append(base, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant exit %d, no stdout, stderr containing %q", r, cli.ExitUser, tc.wantStderr)
			}
		})
	}
}
