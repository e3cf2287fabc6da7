package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
	"github.com/trellismesh/trellis/internal/testutil/promtest"
	"github.com/trellismesh/trellis/internal/testutil/rsyslogtest"
)

const (
	auditCatalogID  = "spiffe://trellis.local/ns/shop/sa/catalog"
	auditFrontendID = "spiffe://trellis.local/ns/shop/sa/frontend"
	// trellisSD is the SD-ID of the syslog sink's structured data.
	trellisSD = "trellis@32473"
)

// readsOnly allows frontend's GETs to catalog and denies every DELETE by a
// named DENY policy, so each denial carries a policy.
const readsOnly = `
apiVersion: trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reads-only, namespace: shop}
spec:
  selector: {service: catalog}
  rules:
  - from: [{principals: ["` + auditFrontendID + `"]}]
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

// auditMesh is a control plane delivering audit events to sinks, and a
// frontend proxy calling a catalog proxy under readsOnly.
type auditMesh struct {
	catalog *proxy.Proxy
	hc      *http.Client
	up      string
}

func startAuditMesh(t *testing.T, sinks ...string) auditMesh {
	t.Helper()
	cp := meshtest.StartControlPlane(t, controlplane.Config{AuditSinks: sinks})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	meshtest.MustApply(t, cp, readsOnly)
	m := auditMesh{catalog: catalog, hc: &http.Client{Timeout: 5 * time.Second}, up: client.UpstreamAddr(0)}
	expect(t, m.hc, m.up, "GET", "/", answer{code: 200})
	expect(t, m.hc, m.up, "DELETE", "/", answer{code: 403, body: denied, deniedBy: "shop/no-deletes"})
	return m
}

// deny makes one DELETE, which must be denied.
func (m auditMesh) deny(t *testing.T, i int) {
	t.Helper()
	if a := call(t, m.hc, m.up, "DELETE", "/items/"+strconv.Itoa(i)); a.code != 403 {
		t.Fatalf("DELETE /items/%d: %d %q, want 403", i, a.code, a.body)
	}
}

// enforcedDenials sums the catalog proxy's enforced deny counters, whatever
// the policy (the mesh default deny before the policies arrived counts).
func enforcedDenials(t *testing.T, p *proxy.Proxy) int {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "trellis_authz_decisions_total{") ||
			!strings.Contains(line, `decision="deny"`) || !strings.Contains(line, `mode="enforce"`) {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += f
	}
	return int(sum)
}

// syslogDenials indexes the catalog proxy's authz.deny messages by log
// index, and counts how many times each index arrived.
func syslogDenials(t *testing.T, msgs []rsyslogtest.Message) (byIndex map[uint64]rsyslogtest.Message, times map[uint64]int) {
	t.Helper()
	byIndex, times = map[uint64]rsyslogtest.Message{}, map[uint64]int{}
	for _, m := range msgs {
		sd := m.SD[trellisSD]
		if m.MsgID != "authz.deny" || sd["reporter"] != auditCatalogID {
			continue
		}
		i, err := strconv.ParseUint(sd["index"], 10, 64)
		if err != nil {
			t.Fatalf("authz.deny without a log index: %q", m.Raw)
		}
		byIndex[i] = m
		times[i]++
	}
	return byIndex, times
}

// checkDenyMessage checks one DELETE denial's RFC 5424 fields.
func checkDenyMessage(t *testing.T, m rsyslogtest.Message) {
	t.Helper()
	if m.App != "trellis" || m.MsgID != "authz.deny" {
		t.Errorf("APP-NAME %q MSGID %q, want trellis authz.deny: %q", m.App, m.MsgID, m.Raw)
	}
	// authpriv (10) * 8 + warning (4).
	if m.PRI != "84" {
		t.Errorf("PRI %q, want 84 (authpriv.warning): %q", m.PRI, m.Raw)
	}
	if !strings.HasPrefix(m.Raw, "<84>1 ") {
		t.Errorf("not an RFC 5424 message: %q", m.Raw)
	}
	sd := m.SD[trellisSD]
	for k, want := range map[string]string{
		"kind": "authz.deny", "reporter": auditCatalogID, "source_id": auditFrontendID,
		"source_service": "frontend", "source_namespace": "shop",
		"destination_service": "catalog", "destination_namespace": "shop",
		"method": "DELETE", "decision": "deny", "policy": "shop/no-deletes",
	} {
		if sd[k] != want {
			t.Errorf("SD %s = %q, want %q: %q", k, sd[k], want, m.Raw)
		}
	}
	if !strings.HasPrefix(sd["path"], "/") {
		t.Errorf("SD path = %q: %q", sd["path"], m.Raw)
	}
}

// awaitAllDenials waits until rsyslog holds as many distinct catalog
// authz.deny events as the catalog proxy counted, then checks the count,
// duplicates and fields. The proxy's counter is read after traffic stopped.
func awaitAllDenials(t *testing.T, srv *rsyslogtest.Server, m auditMesh, deletes int) {
	t.Helper()
	counted := enforcedDenials(t, m.catalog)
	if counted < deletes {
		t.Fatalf("catalog proxy counted %d denials, fewer than the %d DELETEs made", counted, deletes)
	}
	msgs := srv.AwaitMessages(20*time.Second, func(msgs []rsyslogtest.Message) bool {
		byIndex, _ := syslogDenials(t, msgs)
		return len(byIndex) >= counted
	})
	byIndex, times := syslogDenials(t, msgs)
	if len(byIndex) != counted {
		t.Fatalf("rsyslog has %d distinct authz.deny events from catalog, the proxy counted %d", len(byIndex), counted)
	}
	n := 0
	for _, msg := range byIndex {
		if msg.SD[trellisSD]["method"] == "DELETE" {
			checkDenyMessage(t, msg)
			n++
		}
	}
	if n < deletes {
		t.Errorf("rsyslog has %d DELETE denials, want at least %d", n, deletes)
	}
	// At least once, not much more: a server restart may send again at most
	// two batches, which are runs of consecutive log indexes (counting every
	// message, not only denials: other events share the log).
	all := map[uint64]int{}
	for _, msg := range msgs {
		if i, err := strconv.ParseUint(msg.SD[trellisSD]["index"], 10, 64); err == nil {
			all[i]++
		}
	}
	var dup []uint64
	for i, c := range all {
		if c > 2 {
			t.Errorf("log index %d arrived %d times", i, c)
		}
		if c > 1 {
			dup = append(dup, i)
		}
	}
	slices.Sort(dup)
	runs := 0
	for k, i := range dup {
		if k == 0 || dup[k-1]+1 != i {
			runs++
		}
	}
	if runs > 2 {
		t.Errorf("duplicated log indexes %v form %d runs; at most two batches may be sent again", dup, runs)
	}
	dupDenials := 0
	for _, c := range times {
		dupDenials += c - 1
	}
	t.Logf("%d denials counted, %d distinct in rsyslog, %d duplicate deliveries (%d log indexes in %d runs)",
		counted, len(byIndex), dupDenials, len(dup), runs)
}

// TestAuditToRsyslogThroughOutage: denials reach a real rsyslog over plain
// TCP as RFC 5424 audit events, and none is lost while rsyslog is down.
func TestAuditToRsyslogThroughOutage(t *testing.T) {
	srv := rsyslogtest.Start(t, false)
	m := startAuditMesh(t, "syslog+tcp://"+srv.Addr())
	const n = 100
	for i := range n {
		switch i {
		case n / 3:
			// Let some denials arrive first, so the outage cuts a live
			// connection.
			srv.AwaitMessages(10*time.Second, func(msgs []rsyslogtest.Message) bool {
				byIndex, _ := syslogDenials(t, msgs)
				return len(byIndex) > 0
			})
			srv.Stop()
		case 2 * n / 3:
			srv.Restart()
		}
		m.deny(t, i)
		if i >= n/3 && i < 2*n/3 {
			time.Sleep(10 * time.Millisecond) // an outage of about a third of a second
		}
	}
	awaitAllDenials(t, srv, m, n)
}

// TestAuditToRsyslogOverTLS: the same through rsyslog's gtls listener.
func TestAuditToRsyslogOverTLS(t *testing.T) {
	srv := rsyslogtest.Start(t, true)
	m := startAuditMesh(t, "syslog+tls://"+srv.Addr()+"?ca="+url.QueryEscape(srv.PKI.CAFile))
	const n = 10
	for i := range n {
		m.deny(t, i)
	}
	awaitAllDenials(t, srv, m, n)
}

const prometheusPath = promtest.Path

// TestPrometheusScrapesProxyAndControlPlane: a real Prometheus scrapes a
// proxy's admin port and the control plane's API port (with the embedded
// collector's mesh-wide metrics), and its query API returns their series.
func TestPrometheusScrapesProxyAndControlPlane(t *testing.T) {
	if _, err := os.Stat(prometheusPath); err != nil {
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatalf("missing %s (Debian package prometheus); run make deps as root", prometheusPath)
		}
		t.Skipf("missing %s; apt-get install prometheus (make deps) to run this test", prometheusPath)
	}
	cp := meshtest.StartControlPlane(t, controlplane.Config{})
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	catalog := meshtest.StartProxy(t, cp, proxy.Config{Service: "catalog", AppAddr: app, StatsInterval: time.Second})
	client := meshtest.StartProxy(t, cp, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	meshtest.MustApply(t, cp, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {authorization: {default: allow}}\n")
	hc := &http.Client{Timeout: 5 * time.Second}
	up := client.UpstreamAddr(0)
	expect(t, hc, up, "GET", "/", answer{code: 200, body: "ok"})
	const gets = 5
	for range gets {
		if a := call(t, hc, up, "GET", "/items"); a.code != 200 {
			t.Fatalf("GET: %d %q", a.code, a.body)
		}
	}

	api := startPrometheus(t, map[string]string{"proxy": catalog.AdminAddr(), "control": cp.APIAddr()})

	// The catalog proxy's inbound requests: the expect above and the GETs.
	var got []promSample
	testutil.EventuallyWithin(t, 20*time.Second, "Prometheus to have scraped trellis_requests_total from the catalog proxy", func() bool {
		got = promQuery(t, api, `trellis_requests_total{job="proxy",destination_service="catalog",response_code="200"}`)
		return len(got) > 0 && sumValues(got) >= gets+1
	})
	for _, s := range got {
		if s.Metric["destination_namespace"] != "shop" || s.Metric["instance"] != catalog.AdminAddr() {
			t.Errorf("series %v: want destination_namespace shop, instance %s", s.Metric, catalog.AdminAddr())
		}
	}
	if v := sumValues(got); v > gets+20 {
		t.Errorf("trellis_requests_total for catalog = %v, want about %d", v, gets+1)
	}
	// The control plane's gauge of open config streams: both proxies.
	testutil.EventuallyWithin(t, 20*time.Second, "Prometheus to have trellis_control_connected_proxies = 2", func() bool {
		got = promQuery(t, api, `trellis_control_connected_proxies{job="control"}`)
		return len(got) == 1 && got[0].Value == 2
	})
	if got[0].Metric["instance"] != cp.APIAddr() {
		t.Errorf("trellis_control_connected_proxies from %q, want %s", got[0].Metric["instance"], cp.APIAddr())
	}
	// The embedded collector's metrics are on the same port: the control
	// plane's own events (tokens created, the Mesh applied) were appended.
	testutil.EventuallyWithin(t, 20*time.Second, "Prometheus to have trellis_collector_events_appended_total > 0", func() bool {
		got = promQuery(t, api, `trellis_collector_events_appended_total{job="control"}`)
		return sumValues(got) > 0
	})
	// The collector's mesh-wide metrics, from the proxies' traffic stats:
	// the frontend -> catalog edge with every request, and its latency
	// histogram usable by histogram_quantile.
	testutil.EventuallyWithin(t, 20*time.Second, "Prometheus to have trellis_mesh_requests_total for frontend -> catalog", func() bool {
		got = promQuery(t, api, `trellis_mesh_requests_total{job="control",source_service="frontend",destination_service="catalog",destination_namespace="shop"}`)
		return sumValues(got) >= gets+1
	})
	if v := sumValues(got); v > gets+20 {
		t.Errorf("trellis_mesh_requests_total for frontend -> catalog = %v, want about %d", v, gets+1)
	}
	got = promQuery(t, api, `histogram_quantile(0.5, sum by (le) (trellis_mesh_request_duration_seconds_bucket{job="control",destination_service="catalog"}))`)
	if len(got) != 1 || !(got[0].Value > 0 && got[0].Value < 10) {
		t.Errorf("median from trellis_mesh_request_duration_seconds = %v, want one value between 0 and 10 s", got)
	}
	// Both targets are up.
	got = promQuery(t, api, `up`)
	if len(got) != 2 || sumValues(got) != 2 {
		t.Errorf("up = %v, want both targets up", got)
	}
}

// startPrometheus runs Prometheus scraping each job's one target's /metrics
// every second, and returns its base URL once it is ready. It is killed when
// the test ends; its output is shown if the test failed.
func startPrometheus(t *testing.T, jobs map[string]string) string {
	t.Helper()
	var conf strings.Builder
	conf.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n")
	for _, job := range slices.Sorted(func(yield func(string) bool) {
		for k := range jobs {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&conf, "- job_name: %s\n  metrics_path: /metrics\n  static_configs:\n  - targets: [%q]\n", job, jobs[job])
	}
	return promtest.Start(t, conf.String())
}

// promSample is one series of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query through Prometheus' HTTP API.
func promQuery(t *testing.T, base, query string) []promSample {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %s: %v", query, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		t.Fatalf("query %s: status %q type %q error %q", query, r.Status, r.Data.ResultType, r.Error)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			t.Fatalf("query %s: value %v: %v", query, s.Value, err)
		}
		out = append(out, promSample{s.Metric, v})
	}
	return out
}

func sumValues(s []promSample) float64 {
	sum := 0.0
	for _, x := range s {
		sum += x.Value
	}
	return sum
}
