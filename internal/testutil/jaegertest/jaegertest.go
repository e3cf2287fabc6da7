// Package jaegertest runs a real Jaeger all-in-one (v2: an OpenTelemetry
// Collector with Jaeger's in-memory storage and query service) on
// loopback ports for tests, and reads traces back from its query API.
// The binary comes from scripts/jaeger-bin.sh (make jaeger-bin); without
// it Start skips the test, or fails it when TRELLIS_REQUIRE_ALL is set.
// Tests only.
package jaegertest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the Jaeger release scripts/jaeger-bin.sh builds.
const Version = "1.75.0"

// Jaeger is a running Jaeger.
type Jaeger struct {
	// OTLPHost and OTLPPort are the OTLP/gRPC receiver; QueryURL the
	// query service's HTTP base URL.
	OTLPHost string
	OTLPPort int
	QueryURL string
}

// Path is $TRELLIS_JAEGER or the cache of scripts/jaeger-bin.sh.
func Path() string {
	if p := os.Getenv("TRELLIS_JAEGER"); p != "" {
		return p
	}
	cache := os.Getenv("TRELLIS_K8S_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "trellis", "k8s")
	}
	return filepath.Join(cache, "jaeger-v"+Version, "jaeger")
}

// Start runs Jaeger until the test ends, with every listener on a free
// loopback port, and waits for its query service.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	bin := Path()
	if _, err := os.Stat(bin); err != nil {
		msg := bin + " missing: run make jaeger-bin (scripts/jaeger-bin.sh builds Jaeger v" + Version + " once)"
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ports := freePorts(t, 3)
	j := &Jaeger{OTLPHost: "127.0.0.1", OTLPPort: ports[0], QueryURL: "http://127.0.0.1:" + strconv.Itoa(ports[1])}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`, ports[1], ports[2], ports[0])
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("jaeger output:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(j.QueryURL + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("jaeger exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger query not ready after 30s (%v):\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return j
}

// Trace is one trace as the query API (/api/traces) returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	Tags          []Tag       `json:"tags"`
	ProcessID     string      `json:"processID"`
}

// Reference links a span to another (CHILD_OF its parent).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Tag is a span attribute.
type Tag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Process is the service a span came from.
type Process struct {
	ServiceName string `json:"serviceName"`
}

// Tag returns the value of the span's tag key as a string, and whether it
// has it.
func (s *Span) Tag(key string) (string, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value), true
		}
	}
	return "", false
}

// Parent is the span's CHILD_OF parent id, or "".
func (s *Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Traces returns the traces of a service (GET /api/traces?service=).
func (j *Jaeger) Traces(t testing.TB, service string) []Trace {
	t.Helper()
	return j.get(t, "/api/traces?limit=1000&lookback=1h&service="+service)
}

// Trace returns one trace by id (hex), nil when Jaeger does not have it.
func (j *Jaeger) Trace(t testing.TB, id string) *Trace {
	t.Helper()
	ts := j.get(t, "/api/traces/"+id)
	if len(ts) == 0 {
		return nil
	}
	return &ts[0]
}

func (j *Jaeger) get(t testing.TB, path string) []Trace {
	t.Helper()
	resp, err := http.Get(j.QueryURL + path)
	if err != nil {
		t.Fatalf("jaeger %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("jaeger %s: %d: %v", path, resp.StatusCode, err)
	}
	return out.Data
}

// Await polls f until it returns true or d passed.
func Await(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
