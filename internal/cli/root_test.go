package cli_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
)

// TestAuth covers where the admin token comes from: flags beat the
// environment, and a token file beats a token from the same source.
func TestAuth(t *testing.T) {
	m := startMesh(t)
	wrongFile := filepath.Join(t.TempDir(), "wrong.token")
	if err := os.WriteFile(wrongFile, []byte("0000000000000000000000000000000000000000000000000000000000000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missingFile := filepath.Join(t.TempDir(), "missing.token")
	api := []string{"--api", m.APIURL()}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no token", nil, api, cli.ExitUser, "no admin token: pass --token-file DATA_DIR/admin.token (or set TRELLIS_TOKEN_FILE)"},
		{"wrong --token", nil, append(api, "--token", "wrong"), cli.ExitUser, "unauthorized"},
		{"wrong --token-file", nil, append(api, "--token-file", wrongFile), cli.ExitUser, "unauthorized"},
		{"missing --token-file", nil, append(api, "--token-file", missingFile), cli.ExitUser, "--token-file: open " + missingFile},
		{"wrong TRELLIS_TOKEN", map[string]string{"TRELLIS_TOKEN": "wrong"}, api, cli.ExitUser, "unauthorized"},
		{"--token-file", nil, append(api, "--token-file", m.tokenFile()), cli.ExitOK, ""},
		{"--token", nil, append(api, "--token", m.Token), cli.ExitOK, ""},
		{"TRELLIS_TOKEN_FILE", map[string]string{"TRELLIS_TOKEN_FILE": m.tokenFile()}, api, cli.ExitOK, ""},
		{"TRELLIS_TOKEN", map[string]string{"TRELLIS_TOKEN": m.Token}, api, cli.ExitOK, ""},
		{"TRELLIS_API", map[string]string{"TRELLIS_API": m.APIURL(), "TRELLIS_TOKEN": m.Token}, nil, cli.ExitOK, ""},
		{"--api beats TRELLIS_API", map[string]string{"TRELLIS_API": "http://127.0.0.1:1", "TRELLIS_TOKEN": m.Token}, api, cli.ExitOK, ""},
		{"TRELLIS_TOKEN_FILE beats TRELLIS_TOKEN", map[string]string{"TRELLIS_TOKEN_FILE": m.tokenFile(), "TRELLIS_TOKEN": "wrong"}, api, cli.ExitOK, ""},
		{"--token-file beats --token", nil, append(api, "--token-file", m.tokenFile(), "--token", "wrong"), cli.ExitOK, ""},
		{"--token beats TRELLIS_TOKEN_FILE", map[string]string{"TRELLIS_TOKEN_FILE": wrongFile}, append(api, "--token", m.Token), cli.ExitOK, ""},
		{"--token-file beats TRELLIS_TOKEN", map[string]string{"TRELLIS_TOKEN": "wrong"}, append(api, "--token-file", m.tokenFile()), cli.ExitOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			r := run(t, "", append([]string{"get", "mesh"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("got %v\nwant exit %d", r, tc.wantCode)
			}
			if tc.wantCode == cli.ExitOK {
				if !strings.HasPrefix(r.stdout, "NAME ") || !strings.Contains(r.stdout, "\ndefault ") {
					t.Errorf("stdout:\n%s\nwant the mesh table", r.stdout)
				}
				return
			}
			if r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant no stdout and stderr containing %q", r, tc.wantStderr)
			}
		})
	}
}

// TestHelpHidesToken: a token from the environment must not show up in
// --help output as a flag default.
func TestHelpHidesToken(t *testing.T) {
	clearEnv(t)
	const secret = "s3cr3t-admin-token-from-the-environment"
	t.Setenv("TRELLIS_TOKEN", secret)
	t.Setenv("TRELLIS_TOKEN_FILE", "/secret/path/admin.token")
	for _, args := range [][]string{{"--help"}, {"get", "--help"}, {"token", "create", "--help"}} {
		r := run(t, "", args...)
		if r.code != cli.ExitOK || !strings.Contains(r.stdout, "--token string") {
			t.Fatalf("trellis %s: got %v, want exit 0 and help listing --token", strings.Join(args, " "), r)
		}
		if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, "/secret/path") {
			t.Errorf("trellis %s prints the environment's token:\n%s", strings.Join(args, " "), r.stdout)
		}
	}
}

// TestExitCodes covers failures that do not depend on a control plane's
// state: 1 for the user's mistakes, 2 when the server is unreachable or
// fails.
func TestExitCodes(t *testing.T) {
	clearEnv(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"error": "store: disk on fire"}`))
	}))
	t.Cleanup(failing.Close)
	notTrellis := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notTrellis.Close)
	missingCA := filepath.Join(t.TempDir(), "ca.crt")

	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"unreachable server", []string{"get", "mesh", "--api", "http://127.0.0.1:1", "--token", "x"}, cli.ExitInternal, "control plane unreachable at http://127.0.0.1:1"},
		{"unreachable server on apply", []string{"apply", "-f", "testdata/mesh-and-policies.yaml", "--api", "http://127.0.0.1:1", "--token", "x"}, cli.ExitInternal, "control plane unreachable"},
		{"unreachable server on token create", []string{"token", "create", "--service", "web", "--api", "http://127.0.0.1:1", "--token", "x"}, cli.ExitInternal, "control plane unreachable"},
		{"server error", []string{"get", "mesh", "--api", failing.URL, "--token", "x"}, cli.ExitInternal, "store: disk on fire"},
		{"not a trellis API", []string{"get", "mesh", "--api", notTrellis.URL, "--token", "x"}, cli.ExitUser, "404 Not Found"},
		{"unknown subcommand", []string{"frob"}, cli.ExitUser, `unknown command "frob" for "trellis"`},
		{"misspelt subcommand", []string{"aply"}, cli.ExitUser, "apply"},
		{"bad flag", []string{"get", "mesh", "--bogus"}, cli.ExitUser, "unknown flag: --bogus (see trellis get --help)"},
		{"bad root flag", []string{"--bogus", "version"}, cli.ExitUser, "unknown flag: --bogus"},
		{"bad --api", []string{"get", "mesh", "--api", "127.0.0.1:15014", "--token", "x"}, cli.ExitUser, "want http://HOST:PORT or https://HOST:PORT"},
		{"missing --ca-file", []string{"get", "mesh", "--api", "https://127.0.0.1:1", "--token", "x", "--ca-file", missingCA}, cli.ExitUser, "ca file"},
		{"version with arguments", []string{"version", "now"}, cli.ExitUser, `unknown command "now" for "trellis version"`},
		{"control without data dir", []string{"control", "--api-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, cli.ExitUser, "--data-dir is required"},
		{"control with a bad log format", []string{"control", "--data-dir", t.TempDir(), "--log-format", "xml"}, cli.ExitUser, `--log-format "xml": use text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", tc.args...)
			if r.code != tc.wantCode || r.stdout != "" || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("got %v\nwant exit %d, no stdout, stderr containing %q", r, tc.wantCode, tc.wantStderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := run(t, "", "version")
	if r.code != cli.ExitOK || r.stderr != "" || !regexp.MustCompile(`^trellis \S+ \S+/\S+ go\S+\n$`).MatchString(r.stdout) {
		t.Errorf("got %v\nwant exit 0 and one line: trellis VERSION OS/ARCH GOVERSION", r)
	}
}
