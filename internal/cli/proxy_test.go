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
		{"health address not host:port", []string{"--health-addr", "15021"}, `--health-addr "15021": want HOST:PORT`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", append(base, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant exit %d, no stdout, stderr containing %q", r, cli.ExitUser, tc.wantStderr)
			}
		})
	}
}

// Names the control plane would refuse stop the proxy at start, naming the
// flag and the rule (internal/names), instead of failing at every
// reconnect.
func TestProxyNameFlags(t *testing.T) {
	clearEnv(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("not-checked-yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"proxy", "--ca-file", "ca.crt", "--token-file", token}
	for _, tc := range []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"--service", "Web"}, `--service "Web" must be a DNS label`},
		{[]string{"--service", "web", "--namespace", "shop.eu"}, `--namespace "shop.eu" must be a DNS label`},
		{[]string{"--service", "web", "--service-account", "web_1"}, `--service-account "web_1" must be a DNS label`},
		{[]string{"--service", "web", "--upstream", "Catalog.shop=127.0.0.1:9001"}, `--upstream "Catalog.shop=127.0.0.1:9001": want SERVICE.NAMESPACE=HOST:PORT`},
		{[]string{"--service", "web", "--upstream", "catalog.shop.eu=127.0.0.1:9001"}, `--upstream "catalog.shop.eu=127.0.0.1:9001": want SERVICE.NAMESPACE=HOST:PORT`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, "", append(base, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant exit %d, no stdout, stderr containing %q", r, cli.ExitUser, tc.wantStderr)
			}
		})
	}
}
