package pipeline_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/pipeline"
	"github.com/trellismesh/trellis/internal/testutil"
)

// TestProxyEventsReachFileSink: events from an emitter arrive in the file
// sink stamped with the stream's identity and instance, and the sink
// metrics show the progress.
func TestProxyEventsReachFileSink(t *testing.T) {
	pki := collectortest.NewPKI(t)
	sinkPath := filepath.Join(t.TempDir(), "audit.jsonl")
	p, addr := startPipeline(t, pki, "file://"+sinkPath)
	em := startEmitter(t, pki, addr)
	for range 3 {
		em.Emit(denyEvent())
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.SinkStats()[0].Cursor < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("sink cursor %d after 10s, want 3", p.SinkStats()[0].Cursor)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := os.Open(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var seqs []float64
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("sink line %q: %v", sc.Text(), err)
		}
		if m["reporter"] != "spiffe://"+pki.TrustDomain.Name()+"/ns/shop/sa/catalog" {
			t.Errorf("reporter %v, want the stream's SPIFFE ID", m["reporter"])
		}
		if m["instance"] != em.Instance() {
			t.Errorf("instance %v, want the emitter's %q", m["instance"], em.Instance())
		}
		seqs = append(seqs, m["seq"].(float64))
	}
	if len(seqs) != 3 || seqs[0] != 1 || seqs[2] != 3 {
		t.Errorf("seqs %v, want [1 2 3]", seqs)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(p)
	if v := collectortest.GatherValue(t, reg, "trellis_collector_sink_delivered_total", "sink=file://"+sinkPath); v != 3 {
		t.Errorf("trellis_collector_sink_delivered_total = %v, want 3", v)
	}
	if v := collectortest.GatherValue(t, reg, "trellis_collector_sink_lag_records", "sink=file://"+sinkPath); v != 0 {
		t.Errorf("trellis_collector_sink_lag_records = %v, want 0", v)
	}
	if v := collectortest.GatherValue(t, reg, "trellis_collector_log_last_index"); v != 3 {
		t.Errorf("trellis_collector_log_last_index = %v, want 3", v)
	}
}

// TestOpenBadSinkLeavesNothingOpen: a bad URL fails Open naming it, and
// the data dir can be opened again at once (no lock left behind).
func TestOpenBadSinkLeavesNothingOpen(t *testing.T) {
	dir := t.TempDir()
	_, err := pipeline.Open(pipeline.Options{DataDir: dir, Sinks: []string{"file://" + filepath.Join(dir, "ok.jsonl"), "gopher://x"}, Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "gopher") {
		t.Fatalf("Open with a gopher:// sink: %v, want an error naming it", err)
	}
	p, err := pipeline.Open(pipeline.Options{DataDir: dir, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("reopen after a failed Open: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesDuplicateSink: one URL twice would share a cursor.
func TestOpenRefusesDuplicateSink(t *testing.T) {
	dir := t.TempDir()
	u := "file://" + filepath.Join(dir, "a.jsonl")
	_, err := pipeline.Open(pipeline.Options{DataDir: dir, Sinks: []string{u, u}, Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("Open with a sink given twice: %v, want an error saying so", err)
	}
}

// TestGraphHandler: the window parameter is checked, and the answer is
// the graph's JSON.
func TestGraphHandler(t *testing.T) {
	p, err := pipeline.Open(pipeline.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := httptest.NewServer(p.GraphHandler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		query string
		code  int
	}{
		{"", 200}, {"?window=30s", 200}, {"?window=10m", 200},
		{"?window=0s", 400}, {"?window=11m", 400}, {"?window=soon", 400},
	} {
		resp, err := http.Get(srv.URL + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var g adminapi.Graph
		var e adminapi.ErrorBody
		if tc.code == 200 {
			err = json.NewDecoder(resp.Body).Decode(&g)
		} else {
			err = json.NewDecoder(resp.Body).Decode(&e)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || err != nil {
			t.Errorf("GET %s: %d (%v), want %d", tc.query, resp.StatusCode, err, tc.code)
		}
		if tc.code == 400 && !strings.Contains(e.Error, "window") {
			t.Errorf("GET %s: error %q does not name the window parameter", tc.query, e.Error)
		}
		if tc.query == "?window=30s" && g.Window != "30s" {
			t.Errorf("window %q, want 30s", g.Window)
		}
	}
}
