package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// sinkAnomalies reads the anomaly events a file sink received.
func sinkAnomalies(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if k, _ := rec["kind"].(string); strings.HasPrefix(k, "anomaly.") {
			out = append(out, rec)
		}
	}
	return out
}

// A workload that starts scanning, through real proxies after the
// learning window, produces exactly one alert: in a file sink within 30 s,
// in trellis alerts, and in trellis_anomalies_total.
func TestScanningWorkloadRaisesOneAlert(t *testing.T) {
	clearEnv(t)
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	cp := cptest.StartControlPlane(t, controlplane.Config{AuditSinks: []string{"file://" + out}})
	m := &mesh{ControlPlane: cp, client: cp.Client(t)}
	m.mustRun(t, "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  authorization: {default: allow}\n  anomaly: {learningWindow: 3s}\n", "apply", "-f", "-")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(app.Close)
	targets := []string{"catalog", "users", "orders", "search", "payments"}
	var up []proxy.Upstream
	for _, s := range targets {
		meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: s, AppAddr: strings.TrimPrefix(app.URL, "http://"), StatsInterval: time.Second})
		up = append(up, proxy.Upstream{Service: s, Namespace: "shop", Listen: "127.0.0.1:0"})
	}
	batch := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "batch", Upstreams: up, StatsInterval: time.Second})
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(i int, path string) {
		resp, err := client.Get("http://" + batch.UpstreamAddr(i) + path)
		if err != nil {
			t.Fatalf("%s %s: %v", targets[i], path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Every callee's proxy learns batch's identity before traffic counts.
	time.Sleep(2 * time.Second)
	// Normal life through the learning window: batch reads the catalog.
	learnUntil := time.Now().Add(6 * time.Second)
	for n := 0; time.Now().Before(learnUntil); n++ {
		call(0, fmt.Sprintf("/items/%d", n))
		time.Sleep(20 * time.Millisecond)
	}
	if got := sinkAnomalies(t, out); len(got) != 0 {
		t.Fatalf("alerts during normal traffic: %v", got)
	}
	// The scan: every other service, admin paths.
	scanAt := time.Now()
	for i := 1; i < len(targets); i++ {
		for _, p := range []string{"/admin", "/.env", "/debug/vars", "/internal/config"} {
			call(i, p)
		}
	}
	var got []map[string]any
	for deadline := scanAt.Add(30 * time.Second); len(got) == 0; got = sinkAnomalies(t, out) {
		if time.Now().After(deadline) {
			t.Fatal("no anomaly in the file sink within 30s of the scan")
		}
		call(0, "/items/1") // life goes on
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("first alert %s after the scan began", time.Since(scanAt).Round(time.Millisecond))
	// Exactly one: nothing more over the next intervals.
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); {
		call(0, "/items/2")
		time.Sleep(200 * time.Millisecond)
	}
	got = sinkAnomalies(t, out)
	if len(got) != 1 {
		t.Fatalf("the sink got %d anomaly events, want exactly 1:\n%v", len(got), got)
	}
	attrs, _ := got[0]["attributes"].(map[string]any)
	if got[0]["kind"] != "anomaly.fan_out" || attrs["principal"] != "batch.shop" || attrs["severity"] != "high" || !strings.Contains(fmt.Sprint(got[0]["reason"]), "never called before") {
		t.Errorf("the alert in the sink: %v", got[0])
	}

	r := m.run(t, "", "alerts", "-o", "json")
	var alerts []map[string]any
	if r.code != cli.ExitOK || json.Unmarshal([]byte(r.stdout), &alerts) != nil || len(alerts) != 1 {
		t.Fatalf("trellis alerts -o json: %v", r)
	}
	for _, k := range []string{"detector", "severity", "principal", "started", "explanation"} {
		if alerts[0][k] == nil || alerts[0][k] == "" {
			t.Errorf("trellis alerts -o json: no %q in %v", k, alerts[0])
		}
	}
	if out := m.mustRun(t, "", "alerts"); !strings.Contains(out, "fan_out") || !strings.Contains(out, "batch.shop") {
		t.Errorf("trellis alerts:\n%s", out)
	}
	resp, err := http.Get(m.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `trellis_anomalies_total{detector="fan_out"} 1`) {
		t.Errorf("metrics: no trellis_anomalies_total{detector=\"fan_out\"} 1")
	}
}
