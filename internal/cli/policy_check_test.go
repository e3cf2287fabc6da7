package cli_test

import (
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// checkOutput is `policy check -o json`.
type checkOutput struct {
	Decision    string            `json:"decision"`
	Policy      string            `json:"policy"`
	Rule        int               `json:"rule"`
	Reason      string            `json:"reason"`
	Cause       string            `json:"cause"`
	Audit       []checkAudit      `json:"audit"`
	From        string            `json:"from"`
	FromService string            `json:"fromService"`
	To          string            `json:"to"`
	Labels      map[string]string `json:"labels"`
	Selecting   []string          `json:"selecting"`
}

type checkAudit struct {
	Policy     string `json:"policy"`
	Action     string `json:"action"`
	Rule       int    `json:"rule"`
	Matched    bool   `json:"matched"`
	WouldAllow bool   `json:"wouldAllow"`
	Decision   string `json:"decision"`
	Reason     string `json:"reason"`
}

// verdict is the part of a decision scripts rely on.
type verdict struct {
	Decision, Policy string
	Rule             int
	Reason, Cause    string
}

func (o checkOutput) verdict() verdict {
	return verdict{o.Decision, o.Policy, o.Rule, o.Reason, o.Cause}
}

// mustCheck runs `policy check -o json` with args, which must exit 0.
func (m *mesh) mustCheck(t *testing.T, args ...string) (checkOutput, result) {
	t.Helper()
	r := m.run(t, "", append([]string{"policy", "check", "-o", "json"}, args...)...)
	if r.code != cli.ExitOK {
		t.Fatalf("policy check %s: %v", strings.Join(args, " "), r)
	}
	var out checkOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("policy check %s: %v in\n%s", strings.Join(args, " "), err, r.stdout)
	}
	return out, r
}

const (
	frontendID = "spiffe://trellis.local/ns/shop/sa/frontend"
	noAuditDel = "trellis-system/no-deletes"
)

var (
	allowedByReader = verdict{"ALLOW", "shop/frontend-reads-catalog", 0, "allowed by an ALLOW policy", "allow-policy"}
	noAllowMatched  = verdict{"DENY", "", -1, "no ALLOW policy matched", "no-allow-match"}
	deniedByAdmin   = verdict{"DENY", "shop/deny-admin", 0, "denied by a DENY policy", "deny-policy"}
	meshDefaultDeny = verdict{"DENY", "", -1, "mesh default deny", "mesh-default"}
)

func TestPolicyCheck(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	for _, tc := range []struct {
		name string
		args []string
		want verdict
	}{
		{"allowed by principal", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/items/42"}, allowedByReader},
		{"GET / is the default request", []string{"--from", frontendID, "--to", "catalog.shop"}, noAllowMatched},
		{"method outside the rule", []string{"--from", frontendID, "--to", "catalog.shop", "--method", "POST", "--path", "/items"}, noAllowMatched},
		{"encoded dot segments cannot dodge the DENY", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/items/%2e%2e/admin/x"}, deniedByAdmin},
		{"doubled slashes cannot dodge the DENY", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "//admin"}, deniedByAdmin},
		{"percent-decoded like the proxy", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/%69tems"}, allowedByReader},
		{"other principal", []string{"--from", "spiffe://trellis.local/ns/shop/sa/cart", "--to", "catalog.shop", "--path", "/items"}, noAllowMatched},
		{"DENY beats ALLOW", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/admin"}, deniedByAdmin},
		{"dot segments cannot dodge the DENY", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/items/../admin/x"}, deniedByAdmin},
		{"query is not part of the path", []string{"--from", frontendID, "--to", "catalog.shop", "--path", "/admin?debug=1"}, deniedByAdmin},
		{"header matches", []string{"--from", "reporting.shop", "--to", "catalog.shop", "--header", "x-tenant=acme"},
			verdict{"ALLOW", "shop/frontend-reads-catalog", 1, "allowed by an ALLOW policy", "allow-policy"}},
		{"header name is case-insensitive", []string{"--from", "reporting.shop", "--to", "catalog.shop", "--header", "X-Tenant=acme"},
			verdict{"ALLOW", "shop/frontend-reads-catalog", 1, "allowed by an ALLOW policy", "allow-policy"}},
		{"header value differs", []string{"--from", "reporting.shop", "--to", "catalog.shop", "--header", "x-tenant=other"}, noAllowMatched},
		{"header missing", []string{"--from", "reporting.shop", "--to", "catalog.shop"}, noAllowMatched},
		{"caller service unknown from a SPIFFE ID nobody runs", []string{"--from", "spiffe://trellis.local/ns/shop/sa/reporting", "--to", "catalog.shop", "--header", "x-tenant=acme"}, noAllowMatched},
		{"TCP: the DENY's HTTP conditions hold", []string{"--from", frontendID, "--to", "catalog.shop", "--tcp"}, deniedByAdmin},
		{"TCP by port", []string{"--from", "frontend.shop", "--to", "db.shop", "--tcp", "--port", "5432"},
			verdict{"ALLOW", "shop/db-access", 0, "allowed by an ALLOW policy", "allow-policy"}},
		{"TCP on another port", []string{"--from", "frontend.shop", "--to", "db.shop", "--tcp", "--port", "5433"}, noAllowMatched},
		{"HTTP-only rule over HTTP", []string{"--from", "billing.pay", "--to", "db.shop", "--port", "5432"},
			verdict{"ALLOW", "shop/db-access", 1, "allowed by an ALLOW policy", "allow-policy"}},
		{"HTTP-only rule never matches TCP", []string{"--from", "billing.pay", "--to", "db.shop", "--tcp", "--port", "5432"}, noAllowMatched},
		{"no policy selects the workload", []string{"--from", frontendID, "--to", "web.public"}, meshDefaultDeny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := m.mustCheck(t, tc.args...)
			if got.verdict() != tc.want {
				t.Errorf("got %+v, want %+v", got.verdict(), tc.want)
			}
		})
	}
}

func TestPolicyCheckResolvesServiceWithoutProxies(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	got, r := m.mustCheck(t, "--from", "frontend.shop", "--to", "catalog.shop", "--path", "/items")
	if got.verdict() != allowedByReader {
		t.Errorf("got %+v, want %+v", got.verdict(), allowedByReader)
	}
	if got.From != frontendID || got.FromService != "frontend.shop" || got.To != "catalog.shop" {
		t.Errorf("from %q (%q) to %q: want %q (frontend.shop) to catalog.shop", got.From, got.FromService, got.To, frontendID)
	}
	for _, want := range []string{
		"note: no proxy of frontend.shop is registered; assuming its identity is " + frontendID,
		"note: no proxy of catalog.shop is registered",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q: want %q", r.stderr, want)
		}
	}
	want := []string{"shop/deny-admin", "shop/frontend-reads-catalog", noAuditDel}
	if !reflect.DeepEqual(got.Selecting, want) {
		t.Errorf("selecting %q, want %q", got.Selecting, want)
	}
}

func TestPolicyCheckAudit(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	for _, tc := range []struct {
		name      string
		args      []string
		want      verdict
		wantAudit checkAudit
	}{
		{"audit DENY matches", []string{"--method", "DELETE", "--path", "/items/1"}, noAllowMatched,
			checkAudit{Policy: noAuditDel, Action: "DENY", Rule: 0, Matched: true, WouldAllow: false, Decision: "DENY", Reason: "audit DENY policy matched"}},
		{"audit DENY does not match", []string{"--path", "/items/1"}, allowedByReader,
			checkAudit{Policy: noAuditDel, Action: "DENY", Rule: -1, Matched: false, WouldAllow: true, Decision: "ALLOW", Reason: "audit DENY policy did not match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := m.mustCheck(t, append([]string{"--from", frontendID, "--to", "catalog.shop"}, tc.args...)...)
			if got.verdict() != tc.want {
				t.Errorf("got %+v, want %+v", got.verdict(), tc.want)
			}
			if len(got.Audit) != 1 || got.Audit[0] != tc.wantAudit {
				t.Errorf("audit %+v, want [%+v]", got.Audit, tc.wantAudit)
			}
		})
	}
	// The audit policy's would-be DENY does not change an ALLOW.
	m.mustApply(t, "testdata/policy/check-audit-allowed.yaml")
	got, _ := m.mustCheck(t, "--from", frontendID, "--to", "catalog.shop", "--method", "DELETE", "--path", "/items/1")
	want := verdict{"ALLOW", "shop/frontend-deletes", 0, "allowed by an ALLOW policy", "allow-policy"}
	wantAudit := checkAudit{Policy: noAuditDel, Action: "DENY", Rule: 0, Matched: true, WouldAllow: false, Decision: "DENY", Reason: "audit DENY policy matched"}
	if got.verdict() != want || len(got.Audit) != 1 || got.Audit[0] != wantAudit {
		t.Errorf("got %+v audit %+v, want %+v audit [%+v]", got.verdict(), got.Audit, want, wantAudit)
	}
}

func TestPolicyCheckMeshDefault(t *testing.T) {
	m := startMesh(t)
	r := m.run(t, "", "policy", "check", "--from", frontendID, "--to", "catalog.shop", "-o", "json")
	if r.code != cli.ExitOK {
		t.Fatalf("got %v, want exit 0", r)
	}
	// The interface: these keys are present even when empty.
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	wantRaw := map[string]any{"decision": "DENY", "policy": "", "rule": -1.0, "reason": "mesh default deny", "cause": "mesh-default", "audit": []any{}}
	for k, want := range wantRaw {
		if got, ok := raw[k]; !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v (present: %v), want %#v", k, got, ok, want)
		}
	}

	m.mustApply(t, "testdata/policy/mesh-allow.yaml")
	got, _ := m.mustCheck(t, "--from", frontendID, "--to", "catalog.shop")
	if want := (verdict{"ALLOW", "", -1, "mesh default allow", "mesh-default"}); got.verdict() != want {
		t.Errorf("default allow: got %+v, want %+v", got.verdict(), want)
	}
}

func TestPolicyCheckText(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"policy-check-deny.golden", []string{"--from", frontendID, "--to", "catalog.shop", "--method", "DELETE", "--path", "/admin/users", "--header", "x-tenant=acme", "--port", "8080"}},
		{"policy-check-allow.golden", []string{"--from", "frontend.shop", "--to", "catalog.shop", "--path", "/items"}},
		{"policy-check-default.golden", []string{"--from", frontendID, "--to", "web.public", "--tcp", "--port", "443"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			out := m.mustRun(t, "", append([]string{"policy", "check"}, tc.args...)...)
			testutil.Golden(t, tc.golden, out)
		})
	}
}

func TestPolicyCheckNotesPortConditions(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	_, r := m.mustCheck(t, "--from", "frontend.shop", "--to", "db.shop", "--tcp")
	if want := "note: no --port given, and shop/db-access name ports"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q: want %q", r.stderr, want)
	}
}

// closedAPI is an admin API URL nobody listens on.
func closedAPI(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestPolicyCheckBadFlags(t *testing.T) {
	clearEnv(t)
	// Flags are checked before the API is contacted: an unreachable one
	// must not turn a bad flag into exit 2.
	api := closedAPI(t)
	ok := []string{"--from", "frontend.shop", "--to", "catalog.shop"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--from and --to are required"},
		{[]string{"--to", "catalog.shop"}, "--from and --to are required"},
		{[]string{"--from", "frontend", "--to", "catalog.shop"}, `--from "frontend": want a SPIFFE ID (spiffe://trellis.local/ns/shop/sa/frontend) or SERVICE.NAMESPACE (frontend.shop)`},
		{[]string{"--from", "spiffe://Bad Domain/x", "--to", "catalog.shop"}, "write spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT or SERVICE.NAMESPACE"},
		{[]string{"--from", "frontend.shop", "--to", "catalog"}, `--to "catalog": want SERVICE.NAMESPACE, e.g. --to catalog.shop`},
		{[]string{"--from", "frontend.shop", "--to", "Catalog.shop"}, "want SERVICE.NAMESPACE"},
		{[]string{"--from", "frontend.shop", "--to", "catalog.shop.x"}, "want SERVICE.NAMESPACE"},
		{append([]string{"--header", "x-tenant"}, ok...), `--header "x-tenant": want NAME=VALUE, e.g. --header x-tenant=a`},
		{append([]string{"--header", "x tenant=a"}, ok...), "want NAME=VALUE"},
		{append([]string{"--header", "x-tenant="}, ok...), "an empty value is the same as no header"},
		{append([]string{"--port", "0"}, ok...), "--port 0: want a port number from 1 to 65535"},
		{append([]string{"--port", "70000"}, ok...), "--port 70000: want a port number from 1 to 65535"},
		{append([]string{"--port", "http"}, ok...), `invalid argument "http" for "--port"`},
		{append([]string{"--tcp", "--path", "/x"}, ok...), "--path is an HTTP attribute and --tcp checks an opaque TCP connection"},
		{append([]string{"--tcp", "--header", "a=b"}, ok...), "--header is an HTTP attribute"},
		{append([]string{"--path", "items"}, ok...), `--path "items": want an absolute path`},
		{append([]string{"--method", "GE T"}, ok...), "want an HTTP method"},
		{append([]string{"--method", "get"}, ok...), `--method "get": methods are case-sensitive and the proxy refuses get with 400; write GET`},
		{append([]string{"--label", "version"}, ok...), `--label "version": want KEY=VALUE`},
		{append([]string{"-o", "yaml"}, ok...), `-o "yaml": use text or json`},
		{append([]string{"extra"}, ok...), "takes no arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, "", append([]string{"--api", api, "--token", "x", "policy", "check"}, tc.args...)...)
			if r.code != cli.ExitUser || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("got %v\nwant exit 1 and stderr containing %q", r, tc.want)
			}
		})
	}
}

func TestPolicyUnknownSubcommand(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "policy", "chek")
	if r.code != cli.ExitUser || !strings.Contains(r.stderr, `did you mean "check"?`) {
		t.Errorf("got %v, want exit 1 suggesting check", r)
	}
}

func TestPolicyCheckUnreachable(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "--api", closedAPI(t), "--token", "x", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop")
	if r.code != cli.ExitInternal || !strings.Contains(r.stderr, "control plane unreachable") {
		t.Errorf("got %v, want exit 2 saying the control plane is unreachable", r)
	}
}

// neverCalled is the app address of proxies whose app no test calls: an
// app makes a proxy an endpoint of its service.
const neverCalled = "127.0.0.1:9"

// startMeshWithProxies starts a control plane in trust domain corp.test
// with frontend.shop (service account web) and catalog.shop (labels
// version=v2) registered.
func startMeshWithProxies(t *testing.T) *mesh {
	t.Helper()
	clearEnv(t)
	cp := meshtest.StartControlPlane(t, controlplane.Config{TrustDomain: "corp.test"})
	m := &mesh{ControlPlane: cp, client: cp.Client(t)}
	meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", ServiceAccount: "web", AppAddr: neverCalled})
	meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", Labels: map[string]string{"version": "v2"}, AppAddr: neverCalled})
	return m
}

func TestPolicyCheckWithProxies(t *testing.T) {
	m := startMeshWithProxies(t)
	m.mustApply(t, "testdata/policy/check-labels.yaml")
	const webID = "spiffe://corp.test/ns/shop/sa/web"
	allowedV2 := verdict{"ALLOW", "shop/web-to-catalog-v2", 0, "allowed by an ALLOW policy", "allow-policy"}
	for _, tc := range []struct {
		name                  string
		args                  []string
		want                  verdict
		wantFrom, wantFromSvc string
		wantLabels            map[string]string
	}{
		{"service resolves to its proxies' identity", []string{"--from", "frontend.shop"}, allowedV2, webID, "frontend.shop", map[string]string{"version": "v2"}},
		{"SPIFFE ID resolves to its service", []string{"--from", webID}, allowedV2, webID, "frontend.shop", map[string]string{"version": "v2"}},
		{"unregistered service in the proxies' trust domain", []string{"--from", "cart.shop"}, noAllowMatched, "spiffe://corp.test/ns/shop/sa/cart", "cart.shop", map[string]string{"version": "v2"}},
		{"--label replaces the proxies' labels", []string{"--from", "frontend.shop", "--label", "version=v1"}, meshDefaultDeny, webID, "frontend.shop", map[string]string{"version": "v1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := m.mustCheck(t, append(tc.args, "--to", "catalog.shop")...)
			if got.verdict() != tc.want {
				t.Errorf("got %+v, want %+v", got.verdict(), tc.want)
			}
			if got.From != tc.wantFrom || got.FromService != tc.wantFromSvc || !reflect.DeepEqual(got.Labels, tc.wantLabels) {
				t.Errorf("from %q (%q) labels %v, want %q (%q) labels %v", got.From, got.FromService, got.Labels, tc.wantFrom, tc.wantFromSvc, tc.wantLabels)
			}
			if strings.Contains(r.stderr, "no proxy of catalog.shop") {
				t.Errorf("stderr %q: catalog.shop has a proxy", r.stderr)
			}
		})
	}
	r := m.run(t, "", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop", "--trust-domain", "trellis.local")
	if want := `--trust-domain "trellis.local": the mesh's proxies are in trust domain corp.test`; r.code != cli.ExitUser || !strings.Contains(r.stderr, want) {
		t.Errorf("got %v, want exit 1 and %q", r, want)
	}
}

// policy check canonicalizes paths with the proxy's own function, in the
// live mesh's mode: what the proxy refuses with 400 is an error here, and
// what it rewrites is decided rewritten.
func TestPolicyCheckPathsAsTheProxy(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	for _, p := range []string{"/items/..%5cadmin", `/items/..\admin`, "/items/..;/admin", "/items/%252e%252e/admin", "/items/..%2fadmin"} {
		r := m.run(t, "", "policy", "check", "--from", frontendID, "--to", "catalog.shop", "--path", p)
		if want := "the proxy answers 400 before any policy: request path refused"; r.code != cli.ExitUser || !strings.Contains(r.stderr, want) {
			t.Errorf("--path %s: got %v\nwant exit 1 and stderr containing %q", p, r, want)
		}
	}
	m.mustApply(t, "testdata/policy/mesh-decode-slashes.yaml")
	for _, p := range []string{"/items/..%5cadmin/x", `/items/..\admin/x`, "/items/..%2fadmin/x"} {
		got, _ := m.mustCheck(t, "--from", frontendID, "--to", "catalog.shop", "--path", p)
		if got.verdict() != deniedByAdmin {
			t.Errorf("--path %s under decodeSlashes: got %+v, want %+v", p, got.verdict(), deniedByAdmin)
		}
	}
}
