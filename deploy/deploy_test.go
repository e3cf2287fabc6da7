package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/dataplane/metrics"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

const (
	rulesFile     = "prometheus/trellis-alerts.yaml"
	rulesTestFile = "prometheus/trellis-alerts.test.yaml"
	// dashboardCount is how many dashboards grafana/ holds: mesh overview,
	// service, control plane.
	dashboardCount = 3
)

// promtool returns the path of promtool (Debian's prometheus package), or
// skips the test when it is missing, failing it instead when
// TRELLIS_REQUIRE_ALL is set.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
		t.Fatalf("missing promtool (Debian package prometheus); run make deps as root")
	}
	t.Skipf("missing promtool; apt-get install prometheus (make deps) to run this test")
	return ""
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAlertRules: the rules load (promtool check rules) and their unit
// tests pass (promtool test rules): each alert fires on the series meant
// to fire it, and not on the others.
func TestAlertRules(t *testing.T) {
	runPromtool(t, ".", "check", "rules", rulesFile)
	runPromtool(t, "prometheus", "test", "rules", filepath.Base(rulesTestFile))
}

// rule is one rule of a rules file.
type rule struct {
	Alert, Record, Expr, For string
	Labels                   map[string]string
	Annotations              map[string]string
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []rule
		}
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return out
}

// TestAlertRulesAnnotated: every alert has a severity, a summary, a
// description and a runbook naming a trellis command.
func TestAlertRulesAnnotated(t *testing.T) {
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if !strings.Contains(r.Annotations["runbook"], "trellis ") {
			t.Errorf("%s: runbook %q names no trellis command", r.Alert, r.Annotations["runbook"])
		}
	}
}

// dashboard is what the tests read of a Grafana dashboard.
type dashboard struct {
	file          string
	UID           string
	Title         string
	SchemaVersion int
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any
			Datasource *datasource
		}
	}
	Panels []panel
}

type datasource struct{ Type, UID string }

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource *datasource
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID        string
		Expr         string
		LegendFormat string
		Datasource   *datasource
	}
	Panels []panel // a collapsed row's
}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	files, err := filepath.Glob("grafana/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != dashboardCount {
		t.Fatalf("grafana/*.json: %d dashboards %q, want %d", len(files), files, dashboardCount)
	}
	var out []dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d.file = f
		out = append(out, d)
	}
	return out
}

// panels is every panel of d, those of collapsed rows too.
func (d dashboard) panels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

const datasourceVar = "${datasource}"

// TestDashboardsWellFormed: each dashboard parses, has a unique uid, schema
// 39, a datasource variable of type prometheus, and every panel but rows
// uses it and has queries.
func TestDashboardsWellFormed(t *testing.T) {
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q: want both", d.file, d.UID, d.Title)
		}
		if f, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q also in %s", d.file, d.UID, f)
		}
		uids[d.UID] = d.file
		if d.SchemaVersion != 39 {
			t.Errorf("%s: schemaVersion %d, want 39", d.file, d.SchemaVersion)
		}
		hasDS := false
		for _, v := range d.Templating.List {
			switch v.Type {
			case "datasource":
				hasDS = hasDS || (v.Name == "datasource" && v.Query == "prometheus")
			case "query":
				if v.Datasource == nil || v.Datasource.UID != datasourceVar {
					t.Errorf("%s: variable %s: datasource %v, want uid %s", d.file, v.Name, v.Datasource, datasourceVar)
				}
			}
		}
		if !hasDS {
			t.Errorf("%s: no variable datasource of type datasource with query prometheus", d.file)
		}
		ids := map[int]bool{}
		for _, p := range d.panels() {
			where := fmt.Sprintf("%s: panel %d %q", d.file, p.ID, p.Title)
			if ids[p.ID] {
				t.Errorf("%s: duplicate id", where)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: gridPos %+v outside the 24 columns", where, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != datasourceVar {
				t.Errorf("%s: datasource %v, want type prometheus, uid %s", where, p.Datasource, datasourceVar)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
					t.Errorf("%s: target %q without expr or refId", where, tg.RefID)
				}
				if tg.Datasource == nil || tg.Datasource.UID != datasourceVar {
					t.Errorf("%s: target %s: datasource %v, want uid %s", where, tg.RefID, tg.Datasource, datasourceVar)
				}
			}
		}
	}
}

// query is one PromQL expression of a dashboard or rule, with the labels
// its legend or annotations name.
type query struct {
	where  string
	expr   string
	labels []string // {{label}} of a legend, $labels.label of annotations
	// label is the label a label_values() variable lists.
	label string
}

var (
	legendLabelRe     = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	annotationLabelRe = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	labelValuesRe     = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
	// grafanaVars are the variables the dashboards' queries use, and what
	// they become for checking.
	grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$namespace", "shop", "$service", "catalog")
)

// queries is every expression of the dashboards and the rules, with
// Grafana's variables replaced.
func queries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, d := range loadDashboards(t) {
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			m := labelValuesRe.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("%s: variable %s: query %q, want label_values(SELECTOR, LABEL)", d.file, v.Name, s)
				continue
			}
			out = append(out, query{where: fmt.Sprintf("%s: variable %s", d.file, v.Name), expr: grafanaVars.Replace(m[1]), label: m[2]})
		}
		for _, p := range d.panels() {
			for _, tg := range p.Targets {
				var labels []string
				for _, m := range legendLabelRe.FindAllStringSubmatch(tg.LegendFormat, -1) {
					labels = append(labels, m[1])
				}
				out = append(out, query{where: fmt.Sprintf("%s: panel %q target %s", d.file, p.Title, tg.RefID), expr: grafanaVars.Replace(tg.Expr), labels: labels})
			}
		}
	}
	for _, r := range loadRules(t) {
		var labels []string
		for _, a := range r.Annotations {
			for _, m := range annotationLabelRe.FindAllStringSubmatch(a, -1) {
				labels = append(labels, m[1])
			}
		}
		out = append(out, query{where: fmt.Sprintf("%s: %s%s", rulesFile, r.Alert, r.Record), expr: r.Expr, labels: labels})
	}
	return out
}

// TestDashboardQueriesParse: every dashboard query is valid PromQL, checked
// by promtool as recording rules.
func TestDashboardQueriesParse(t *testing.T) {
	pt := promtool(t)
	type rec struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rec
	var where []string
	for i, q := range queries(t) {
		rules = append(rules, rec{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: q.expr})
		where = append(where, fmt.Sprintf("dashboard:query_%d is %s: %s", i, q.where, q.expr))
	}
	b, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "queries.yaml")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(pt, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboards' queries: %v\n%s\nqueries:\n%s", err, out, strings.Join(where, "\n"))
	}
}

// inventory maps each exported sample name (histograms' _bucket, _sum and
// _count) to its label names.
type inventory map[string]map[string]bool

// add reads the Prometheus text exposition body.
func (inv inventory) add(body string) error {
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		labels := inv[name]
		if labels == nil {
			labels = map[string]bool{}
			inv[name] = labels
		}
		if !strings.HasPrefix(rest, "{") {
			continue
		}
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			eq := strings.Index(rest, "=\"")
			if eq < 0 {
				return fmt.Errorf("bad labels in %q", line)
			}
			labels[strings.TrimSpace(rest[:eq])] = true
			rest = rest[eq+2:]
			for i := 0; ; i++ { // skip the quoted value
				if i >= len(rest) {
					return fmt.Errorf("unterminated label value in %q", line)
				}
				if rest[i] == '\\' {
					i++
					continue
				}
				if rest[i] == '"' {
					rest = strings.TrimPrefix(rest[i+1:], ",")
					break
				}
			}
		}
	}
	return nil
}

var (
	stringRe = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	// trellisMetricRe is a metric name of Trellis or of the Go and process
	// collectors every role exports, with its matchers if any.
	trellisMetricRe = regexp.MustCompile(`\b((?:trellis|go|process)_[a-zA-Z0-9_]+)\b(\s*\{[^}]*\})?`)
	// selectorRe is any name followed by matchers or a range.
	selectorRe = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[]`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRe = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// check returns what q names that inv does not export: metrics, labels
// of matchers, grouping, legends and annotations.
func (inv inventory) check(q query) []string {
	var problems []string
	s := stringRe.ReplaceAllString(q.expr, `""`)
	known := map[string]bool{}
	for _, l := range targetLabels {
		known[l] = true
	}
	for _, m := range selectorRe.FindAllStringSubmatch(s, -1) {
		if !trellisMetricRe.MatchString(m[1]) {
			problems = append(problems, fmt.Sprintf("%s: %s is no metric of Trellis", q.where, m[1]))
		}
	}
	for _, m := range trellisMetricRe.FindAllStringSubmatch(s, -1) {
		labels, ok := inv[m[1]]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: metric %s is not exported", q.where, m[1]))
			continue
		}
		for l := range labels {
			known[l] = true
		}
		for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			if !labels[mm[1]] && !slices.Contains(targetLabels, mm[1]) {
				problems = append(problems, fmt.Sprintf("%s: metric %s has no label %s", q.where, m[1], mm[1]))
			}
		}
	}
	var named []string
	for _, m := range groupingRe.FindAllStringSubmatch(s, -1) {
		for l := range strings.SplitSeq(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				named = append(named, l)
			}
		}
	}
	named = append(named, q.labels...)
	if q.label != "" {
		named = append(named, q.label)
	}
	for _, l := range named {
		if !known[l] {
			problems = append(problems, fmt.Sprintf("%s: label %s is on none of the metrics of %s", q.where, l, q.expr))
		}
	}
	return problems
}

// TestInventoryCheck: the check finds unknown metrics and labels.
func TestInventoryCheck(t *testing.T) {
	inv := inventory{}
	if err := inv.add("# TYPE trellis_x_total counter\ntrellis_x_total{a=\"1\",b=\"q\\\"},\"} 3\ntrellis_g 1\n"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q    query
		want int
	}{
		{query{expr: `sum by (a, instance) (rate(trellis_x_total{b!="x}",job="j"}[5m])) / trellis_g`, labels: []string{"a"}}, 0},
		{query{expr: `rate(trellis_y_total[5m])`}, 1},
		{query{expr: `trellis_x_total{c="1"}`}, 1},
		{query{expr: `sum by (c) (trellis_x_total)`}, 1},
		{query{expr: `up == 0`, labels: []string{"d"}}, 1},
		{query{expr: `up{job="x"}`}, 1},
		{query{expr: `trellis_g`, label: "a"}, 1},
	} {
		if got := inv.check(tc.q); len(got) != tc.want {
			t.Errorf("check(%q) = %q, want %d problems", tc.q.expr, got, tc.want)
		}
	}
}

// TestMetricsExist: every metric and label the dashboards, the rules and
// the rules' test series name is exported by a real control plane (with
// its embedded collector and an audit sink) and real proxies, scraped on
// their /metrics after traffic allowed and denied by a policy. The
// families only rarer events create (retries, timeouts, ejections,
// circuit breaker overflows, Route events, refused connections) come from
// the proxy's metrics registry (the same internal/dataplane/metrics.New a
// proxy serves), exercised through the calls the data path makes.
//
// Then a real Prometheus scrapes the same mesh with the rules loaded: every
// rule evaluates without error, and so does every dashboard query.
func TestMetricsExist(t *testing.T) {
	inv, targets := liveInventory(t)
	if err := inv.add(dataPlaneExposition(t)); err != nil {
		t.Fatal(err)
	}
	qs := queries(t)
	for _, q := range append(slices.Clone(qs), testSeries(t)...) {
		for _, p := range inv.check(q) {
			t.Error(p)
		}
	}
	t.Run("Prometheus", func(t *testing.T) { prometheusEvaluates(t, targets, qs) })
}

// testSeries are the input series of the rules' unit tests, as queries:
// their names and labels must be real too.
func testSeries(t *testing.T) []query {
	t.Helper()
	b, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tests []struct {
			InputSeries []struct{ Series string } `json:"input_series"`
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	var out []query
	for _, tc := range f.Tests {
		for _, s := range tc.InputSeries {
			out = append(out, query{where: rulesTestFile + ": series", expr: s.Series})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no input series", rulesTestFile)
	}
	return out
}

// readsOnly lets frontend GET from catalog and denies every DELETE by a
// named DENY policy.
const readsOnly = `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reads-only, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["spiffe://trellis.local/ns/shop/sa/frontend"]}]
    to: [{methods: [GET]}]
---
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-deletes, namespace: shop}
spec:
  selector: {service: catalog}
  action: DENY
  rules:
  - to: [{methods: [DELETE]}]
`

// liveInventory runs a control plane and frontend -> catalog proxies,
// sends allowed and denied requests, and reads every /metrics once the
// collector has the proxies' traffic counters. targets are the /metrics
// addresses by job: control and proxy.
func liveInventory(t *testing.T) (inv inventory, targets map[string][]string) {
	t.Helper()
	cp := meshtest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + filepath.Join(t.TempDir(), "audit.jsonl")}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(lis)
	t.Cleanup(func() { app.Close() })
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: lis.Addr().String(), StatsInterval: time.Second})
	frontend := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", StatsInterval: time.Second,
		Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	meshtest.MustApply(t, cp, readsOnly)

	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(method string) int {
		req, err := http.NewRequest(method, "http://"+frontend.UpstreamAddr(0)+"/items", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The policies reach the catalog proxy a little after the apply.
	testutil.EventuallyWithin(t, 20*time.Second, "DELETE to be denied and GET allowed", func() bool {
		return call("DELETE") == http.StatusForbidden && call("GET") == http.StatusOK
	})

	scrape := func(addr string) string {
		resp, err := hc.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", addr, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %s: %d %v", addr, resp.StatusCode, err)
		}
		return string(b)
	}
	// The collector's mesh metrics appear with the proxies' first traffic
	// reports after the requests.
	var control string
	testutil.EventuallyWithin(t, 20*time.Second, "the control plane to export the frontend -> catalog edge with a denial", func() bool {
		control = scrape(cp.APIAddr())
		return strings.Contains(control, "trellis_mesh_requests_denied_total{") && strings.Contains(control, "trellis_mesh_request_duration_seconds_bucket{")
	})
	inv = inventory{}
	for _, body := range []string{control, scrape(catalog.AdminAddr()), scrape(frontend.AdminAddr())} {
		if err := inv.add(body); err != nil {
			t.Fatal(err)
		}
	}
	return inv, map[string][]string{"control": {cp.APIAddr()}, "proxy": {catalog.AdminAddr(), frontend.AdminAddr()}}
}

// dataPlaneExposition is the proxy's metrics registry after one of each
// event that creates a family's series.
func dataPlaneExposition(t *testing.T) string {
	t.Helper()
	m := metrics.New()
	d := m.Dest(metrics.Outbound, "catalog", "shop", "frontend", "shop", "spiffe://trellis.local/ns/shop/sa/frontend")
	d.OutboundRequest(200, time.Now())
	d.GRPCStatus(0)
	d.TCPConn()
	d.Retry()
	d.RetrySkippedForBudget()
	d.Timeout(metrics.TimeoutRequest)
	d.Ejection("consecutive_5xx")
	d.EjectedEndpoints(1)
	d.BreakerOverflow("shop/catalog", "max_connections")
	d.UpstreamFailure("connect")
	m.Route("catalog", "shop", "shop/canary", 0).Inc(metrics.RouteHit)
	m.Reject(metrics.RejectPlaintext)
	m.RefusedRequest("rate_limited")
	m.AuditDecided("shop/audit", false)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
