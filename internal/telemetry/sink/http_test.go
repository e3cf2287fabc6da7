package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// collector is an HTTP SIEM collector on loopback that answers the first
// failFirst POSTs with 503 and records the events of the others.
type collector struct {
	t         testing.TB
	srv       *httptest.Server
	failFirst int

	mu      sync.Mutex
	posts   int
	batches [][]map[string]any
	headers []http.Header
}

func newCollector(t testing.TB, failFirst int) *collector {
	c := &collector{t: t, failFirst: failFirst}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts++
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" {
		c.t.Errorf("collector: %s %s, want POST /ingest", r.Method, r.URL.Path)
	}
	if c.posts <= c.failFirst {
		http.Error(w, "collector warming up", http.StatusServiceUnavailable)
		return
	}
	var req struct {
		Events []map[string]any `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		c.t.Errorf("collector: body %.200s: %v", body, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.batches = append(c.batches, req.Events)
	c.headers = append(c.headers, r.Header.Clone())
	w.WriteHeader(http.StatusNoContent)
}

func (c *collector) received() (events []map[string]any, batches [][]map[string]any, headers []http.Header, posts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.batches {
		events = append(events, b...)
	}
	return events, c.batches, c.headers, c.posts
}

// TestHTTPSinkRetries: the collector fails the first three POSTs; every
// event still arrives, once and in order, while events keep being appended.
func TestHTTPSinkRetries(t *testing.T) {
	c := newCollector(t, 3)
	log := openLog(t)
	url := strings.Replace(c.srv.URL, "http://", "http://audit:s3cret@", 1) + "/ingest?channel=trellis"
	s, err := Parse(url, Options{HTTPHeader: http.Header{"X-Siem-Token": {"tok"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const maxBatch = 25
	d := newDeliverer(t, DelivererConfig{
		Name: url, Sink: s, Log: log, Dir: t.TempDir(),
		MaxBatch: maxBatch, BatchDelay: 2 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	})
	appendEvents(t, log, log, 30)
	startDeliverer(t, d)
	for range 20 {
		appendEvents(t, log, log, 7)
		time.Sleep(3 * time.Millisecond)
	}
	const total = 30 + 20*7
	awaitCursor(t, d, total, 10*time.Second)

	events, batches, headers, posts := c.received()
	if got, want := indexes(events), seq(1, total); !reflect.DeepEqual(got, want) {
		t.Fatalf("indexes received:\n got  %v\n want %v", got, want)
	}
	recs, err := log.Read(1, total)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if want := wantJSON(r.Index, r.Event); !reflect.DeepEqual(events[i], want) {
			t.Errorf("event %d:\n got  %v\n want %v", i+1, events[i], want)
		}
	}
	for i, b := range batches {
		if len(b) > maxBatch {
			t.Errorf("batch %d has %d events, more than MaxBatch %d", i, len(b), maxBatch)
		}
	}
	for _, h := range headers {
		user, pass, ok := (&http.Request{Header: h}).BasicAuth()
		if !ok || user != "audit" || pass != "s3cret" || h.Get("X-Siem-Token") != "tok" || h.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v: want basic auth audit:s3cret, X-Siem-Token and JSON content type", h)
			break
		}
	}
	st := d.Stats()
	if st.FailedAttempts != 3 || posts != len(batches)+3 || st.Delivered != total || st.Lag != 0 {
		t.Errorf("stats %+v after %d POSTs for %d batches; want 3 failed attempts, %d delivered, no lag", st, posts, len(batches), total)
	}
}

// TestHTTPSinkStatus: only 2xx confirms a batch; a redirect is not
// followed (it would turn the POST into a GET).
func TestHTTPSinkStatus(t *testing.T) {
	for _, tc := range []struct {
		code int
		ok   bool
		err  string
	}{
		{200, true, ""},
		{202, true, ""},
		{204, true, ""},
		{301, false, "redirect to http://elsewhere.example/in; configure that URL instead"},
		{302, false, "redirect"},
		{400, false, "400 Bad Request: no such index"},
		{429, false, "429"},
		{500, false, "500"},
	} {
		var gets atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				gets.Add(1)
				return
			}
			if tc.code/100 == 3 {
				w.Header().Set("Location", "http://elsewhere.example/in?token=x")
			}
			w.WriteHeader(tc.code)
			if tc.code == 400 {
				io.WriteString(w, "no such index\n")
			}
		}))
		s, err := Parse(srv.URL+"/in", Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(context.Background(), []telemetry.Record{{Index: 1, Event: testEvent(1)}})
		if tc.ok && err != nil {
			t.Errorf("%d: %v", tc.code, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%d: got error %v, want one containing %q", tc.code, err, tc.err)
		}
		if gets.Load() != 0 {
			t.Errorf("%d: the sink followed the redirect", tc.code)
		}
		s.Close()
		srv.Close()
	}
}

// TestHTTPSinkTLS: https with the caller's client (trusting the test
// server's certificate).
func TestHTTPSinkTLS(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Events []json.RawMessage }
		json.NewDecoder(r.Body).Decode(&req)
		got.Add(int32(len(req.Events)))
	}))
	defer srv.Close()
	s, err := Parse(srv.URL, Options{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := []telemetry.Record{{Index: 1, Event: testEvent(1)}, {Index: 2, Event: testEvent(2)}}
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 2 {
		t.Errorf("server got %d events, want 2", got.Load())
	}
	// Without the test server's root the same POST fails.
	s2, _ := Parse(srv.URL, Options{})
	defer s2.Close()
	if err := s2.Send(context.Background(), recs); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server: got %v, want a certificate error", err)
	}
}
