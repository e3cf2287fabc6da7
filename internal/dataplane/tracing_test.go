package dataplane_test

import (
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// headerApp answers 200 and keeps the last request's header.
type headerApp struct {
	mu sync.Mutex
	h  http.Header
}

func (a *headerApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	a.mu.Lock()
	a.h = r.Header.Clone()
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (a *headerApp) last() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.h
}

// The fast path on both proxies: a sampled caller's trace continues
// through a client span at the outbound and a server span at the inbound
// (its child), exported over OTLP; the app's traceparent names the
// inbound's span. An unsampled one is passed on unchanged and exports
// nothing; with a root rate of 0 a request without a context leaves
// with a "not sampled" traceparent.
func TestTracingSpansPerHop(t *testing.T) {
	recv := startOTLPReceiver(t)
	app := &headerApp{}
	for _, tc := range []struct {
		name    string
		rate    float64
		header  string
		spans   int
		appWant string // prefix of the app's traceparent, "" for the caller's own
	}{
		{"sampled caller", 0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 2, "00-4bf92f3577b34da6a3ce929d0e0e4736-"},
		{"unsampled caller", 1, "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 0, ""},
		{"root not sampled", 0, "", 0, "00-"},
		{"root sampled", 1, "", 2, "00-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh(t, meshOptions{app: app, tracing: &meshconfig.Tracing{Provider: "test", Address: recv.addr, Rate: tc.rate}})
			before := len(recv.all())
			req, _ := http.NewRequest("GET", m.url("/items"), nil)
			if tc.header != "" {
				req.Header.Set("Traceparent", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := app.last().Get("Traceparent")
			switch {
			case tc.appWant == "" && got != tc.header:
				t.Errorf("app's traceparent: got %q, want the caller's %q", got, tc.header)
			case tc.appWant != "" && !strings.HasPrefix(got, tc.appWant):
				t.Errorf("app's traceparent: got %q, want %s...", got, tc.appWant)
			case tc.spans == 0 && tc.header == "" && !strings.HasSuffix(got, "-00"):
				t.Errorf("app's traceparent: got %q, want a not-sampled one", got)
			}
			if tc.spans == 0 {
				time.Sleep(1500 * time.Millisecond) // a batch's time
				if n := len(recv.all()) - before; n != 0 {
					t.Errorf("got %d spans, want none", n)
				}
				return
			}
			var spans []*tracepb.Span
			deadline := time.Now().Add(10 * time.Second)
			for len(spans) < tc.spans && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				spans = recv.all()[before:]
			}
			if len(spans) != tc.spans {
				t.Fatalf("got %d spans, want %d", len(spans), tc.spans)
			}
			byName := map[string]*tracepb.Span{}
			for _, s := range spans {
				byName[s.GetName()] = s
			}
			client, server := byName["outbound catalog.shop"], byName["inbound catalog.shop"]
			if client == nil || server == nil {
				t.Fatalf("got spans %v, want outbound and inbound catalog.shop", byName)
			}
			if got, want := hex.EncodeToString(server.GetParentSpanId()), hex.EncodeToString(client.GetSpanId()); got != want {
				t.Errorf("server span's parent: got %s, want the client span %s", got, want)
			}
			if got, want := hex.EncodeToString(client.GetTraceId()), got[3:35]; got != want {
				t.Errorf("trace id: got %s, want the app's %s", got, want)
			}
			if got, want := app.last().Get("Traceparent")[36:52], hex.EncodeToString(server.GetSpanId()); got != want {
				t.Errorf("app's parent span: got %s, want the server span %s", got, want)
			}
			if tc.header != "" {
				if got, want := hex.EncodeToString(client.GetParentSpanId()), tc.header[36:52]; got != want {
					t.Errorf("client span's parent: got %s, want the caller's %s", got, want)
				}
			}
		})
	}
}
