package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

const policiesYAML = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: PERMISSIVE}
  certificates: {workloadTTL: 12h}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-reads-catalog, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET], paths: ["/items/*"]}]
`

const invalidYAML = `apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: shop}
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec:
  rules:
  - to: [{methods: [GTE]}]
`

var (
	jwtLine    = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`)
	createdMsg = regexp.MustCompile(`^token ([0-9a-f]+) for spiffe://trellis.local/ns/shop/sa/web, expires \S+\n$`)
)

// TestScenario runs one user session (apply, get, token create, a bad
// apply) in-process and against the real binaries: both must behave alike.
func TestScenario(t *testing.T) {
	skipIfShort(t)
	t.Run("in-process", func(t *testing.T) {
		cp := cptest.StartControlPlane(t, controlplane.Config{})
		env := []string{"TRELLIS_API=" + cp.APIURL(), "TRELLIS_TOKEN_FILE=" + filepath.Join(cp.DataDir, controlplane.AdminTokenFile)}
		scenario(t, runInProcess, env)
	})
	t.Run("binary", func(t *testing.T) {
		cp := startControl(t, filepath.Join(t.TempDir(), "data"), "")
		cp.AwaitReady(t)
		scenario(t, runBinary, cp.env())
		if code := cp.Stop(t); code != 0 {
			t.Errorf("control plane exit code after SIGTERM: got %d, want 0", code)
		}
	})
}

func scenario(t *testing.T, run runner, env []string) {
	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(policiesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"apply", "-f", file}, "", "Mesh/default configured\n  spec.mtls.mode: STRICT -> PERMISSIVE\n  spec.certificates.workloadTTL: 24h -> 12h\nAuthorizationPolicy/shop/frontend-reads-catalog created\n"},
		{[]string{"apply", "-f", "-"}, policiesYAML, "Mesh/default unchanged\nAuthorizationPolicy/shop/frontend-reads-catalog unchanged\n"},
	} {
		if got := mustRun(t, run, env, step.stdin, step.args...); got != step.want {
			t.Errorf("trellis %s: got\n%s\nwant\n%s", strings.Join(step.args, " "), got, step.want)
		}
	}

	var list struct {
		Items []resource.Object `json:"items"`
	}
	out := mustRun(t, run, env, "", "get", "authz", "-A", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	if len(list.Items) != 1 || list.Items[0].Metadata.Namespace != "shop" || list.Items[0].Metadata.Name != "frontend-reads-catalog" {
		t.Fatalf("get authz -A: got %+v, want shop/frontend-reads-catalog alone", list.Items)
	}
	if spec, err := resource.AuthorizationPolicySpecOf(&list.Items[0]); err != nil || spec.Selector.Service != "catalog" {
		t.Errorf("get authz -A: spec %+v (err %v), want selector service catalog", spec, err)
	}

	out = mustRun(t, run, env, "", "get", "mesh")
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(rows) != 2 || strings.Join(strings.Fields(rows[0]), " ") != "NAME MTLS DEFAULT-AUTHZ WORKLOAD-TTL AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(rows[1]), " "), "default PERMISSIVE deny 12h ") {
		t.Errorf("get mesh: got\n%s\nwant a header and: default PERMISSIVE deny 12h AGE", out)
	}

	r := run(t, env, "", "token", "create", "--service", "web", "--namespace", "shop")
	if r.code != 0 || !jwtLine.MatchString(r.stdout) || !createdMsg.MatchString(r.stderr) {
		t.Fatalf("token create: got %v\nwant exit 0, only a JWT on stdout and its ID on stderr", r)
	}
	id := createdMsg.FindStringSubmatch(r.stderr)[1]
	if out := mustRun(t, run, env, "", "token", "list"); !regexp.MustCompile(`(?m)^` + id + ` .* valid$`).MatchString(out) {
		t.Errorf("token list:\n%s\nwant a valid row for %s", out, id)
	}

	r = run(t, env, invalidYAML, "apply", "-f", "-")
	if want := `<stdin>#2: AuthorizationPolicy shop/bad: spec.rules[0].to[0].methods[0]: "GTE" is not an HTTP method`; r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("apply of an invalid document: got %v\nwant exit 1 and %q", r, want)
	}
	r = run(t, env, "", "get", "authz", "ok", "-n", "shop")
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("get of the good document of a failed apply: got %v, want exit 1, not found", r)
	}
}

// TestControlLifecycle: JSON logs, clean exit on SIGTERM, state kept across
// a restart, and a restart with another trust domain refused.
func TestControlLifecycle(t *testing.T) {
	skipIfShort(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	cp := startControl(t, dataDir, "")
	cp.AwaitReady(t)
	env := cp.env()

	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(policiesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, runBinary, env, "", "apply", "-f", file)
	before := getPolicy(t, env)
	joinToken := strings.TrimSpace(mustRun(t, runBinary, env, "", "token", "create", "--service", "web", "--namespace", "shop"))

	if code := cp.Stop(t); code != 0 {
		t.Fatalf("exit code after SIGTERM: got %d, want 0", code)
	}
	adminToken, err := os.ReadFile(cp.tokenFile())
	if err != nil {
		t.Fatal(err)
	}
	checkJSONLogs(t, cp.Logs(), []string{"created mesh CA", "control plane started", "resource applied", "join token issued", "control plane stopped"},
		[]string{strings.TrimSpace(string(adminToken)), joinToken})

	t.Run("other trust domain", func(t *testing.T) {
		p := startControl(t, dataDir, "", "--trust-domain", "other.example")
		if code := p.AwaitExit(t); code != 1 {
			t.Errorf("exit code: got %d, want 1", code)
		}
		for _, want := range []string{`"other.example"`, `"trellis.local"`} {
			if !strings.Contains(p.Logs(), want) {
				t.Errorf("stderr:\n%s\nwant it to name %s", p.Logs(), want)
			}
		}
	})

	t.Run("restart", func(t *testing.T) {
		p := startControl(t, dataDir, "")
		p.AwaitReady(t)
		after := getPolicy(t, p.env())
		if after.Metadata.UID != before.Metadata.UID || after.Metadata.ResourceVersion != before.Metadata.ResourceVersion {
			t.Errorf("policy after restart: uid %s, resourceVersion %s; want %s, %s (the stored one)",
				after.Metadata.UID, after.Metadata.ResourceVersion, before.Metadata.UID, before.Metadata.ResourceVersion)
		}
		if code := p.Stop(t); code != 0 {
			t.Errorf("exit code after SIGTERM: got %d, want 0", code)
		}
	})
}

func getPolicy(t *testing.T, env []string) resource.Object {
	t.Helper()
	out := mustRun(t, runBinary, env, "", "get", "authz", "frontend-reads-catalog", "-n", "shop", "-o", "json")
	var o resource.Object
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	if o.Metadata.UID == "" {
		t.Fatalf("get -o json: no uid in\n%s", out)
	}
	return o
}

// checkJSONLogs checks that every line of logs is a JSON record with time,
// level and msg, that the messages include wantMsgs, and that no secret
// appears.
func checkJSONLogs(t *testing.T, logs string, wantMsgs, secrets []string) {
	t.Helper()
	seen := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(logs, "\n"), "\n") {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line %d is not JSON (%v): %s", i+1, err, line)
			continue
		}
		if rec.Time.IsZero() || rec.Level == "" || rec.Msg == "" {
			t.Errorf("log line %d lacks time, level or msg: %s", i+1, line)
		}
		seen[rec.Msg] = true
	}
	for _, m := range wantMsgs {
		if !seen[m] {
			t.Errorf("no %q in the logs:\n%s", m, logs)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("the logs contain a secret (%.8s...)", s)
		}
	}
}

// TestAdminAPIOverTLS: bound to a non-loopback address the admin API
// speaks only TLS, with a certificate from the mesh root in ca.crt.
func TestAdminAPIOverTLS(t *testing.T) {
	skipIfShort(t)
	cp := startControl(t, filepath.Join(t.TempDir(), "data"), freeAddr(t, "0.0.0.0"))
	cp.AwaitReady(t)
	plainURL := "http://" + strings.TrimPrefix(cp.APIURL, "https://")

	t.Run("plain http refused", func(t *testing.T) {
		resp, err := http.Get(plainURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("plain http %s/readyz: got 200, want a TLS error", plainURL)
			}
		}
	})

	t.Run("tls handshake", func(t *testing.T) {
		pem, err := os.ReadFile(cp.caFile())
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		conn, err := tls.Dial("tcp", strings.TrimPrefix(cp.APIURL, "https://"), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("TLS to the admin API with ca.crt: %v", err)
		}
		defer conn.Close()
		if got := conn.ConnectionState().Version; got != tls.VersionTLS13 {
			t.Errorf("TLS version: got %x, want TLS 1.3", got)
		}
	})

	token := "TRELLIS_TOKEN_FILE=" + cp.tokenFile()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string // in stdout if wantCode is 0, else in stderr
	}{
		{"https with --ca-file", []string{"get", "mesh", "--api", cp.APIURL, "--ca-file", cp.caFile()}, 0, "default "},
		{"https without --ca-file", []string{"get", "mesh", "--api", cp.APIURL}, 2, "certificate signed by unknown authority"},
		{"plain http", []string{"get", "mesh", "--api", plainURL}, 1, "400 Bad Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBinary(t, []string{token}, "", tc.args...)
			out := r.stdout
			if tc.wantCode != 0 {
				out = r.stderr
			}
			if r.code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Errorf("got %v\nwant exit %d and %q", r, tc.wantCode, tc.want)
			}
		})
	}
}
