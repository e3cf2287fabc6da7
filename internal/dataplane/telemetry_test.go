package dataplane_test

import (
	"io"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/testutil"
)

// denySecrets allows every request but those for /secret, which the
// policy shop/no-secrets denies with its rule 2.
type denySecrets struct{}

func (denySecrets) Authorize(_ *meshconfig.Snapshot, req *admission.Request) admission.Decision {
	if req.Path == "/secret" {
		return admission.Decision{Allow: false, Policy: "shop/no-secrets", Rule: 2, Reason: "no secrets"}
	}
	return admission.Decision{Allow: true, Rule: -1, Reason: "allowed"}
}

// statusApp answers /fail with 500, everything else with 200.
func statusApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = io.WriteString(w, "ok")
	})
}

// eventLog collects events as an Events func.
type eventLog struct {
	mu  sync.Mutex
	evs []*pb.Event
}

func (l *eventLog) emit(ev *pb.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) events() []*pb.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*pb.Event(nil), l.evs...)
}

// inboundRequests is how many requests the server proxy recorded, from its
// traffic stats: recorded just before the access event is decided.
func inboundRequests(m *mesh) uint64 {
	var n uint64
	for _, e := range m.serverMetrics.TrafficStats("catalog", "shop", time.Time{}).GetEdges() {
		n += e.GetRequests()
	}
	return n
}

func mustGet(t *testing.T, c *http.Client, url string, want int, header ...string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if resp, body := testutil.Do(t, c, req); resp.StatusCode != want {
		t.Fatalf("GET %s: %d %q, want %d", url, resp.StatusCode, body, want)
	}
}

// TestTrafficStatsThroughProxies: requests through a real proxy pair, one
// denied and one failing, plus a plaintext one (PERMISSIVE), add up per
// caller service in the server proxy's traffic stats.
func TestTrafficStatsThroughProxies(t *testing.T) {
	m := newMesh(t, meshOptions{
		mode: "PERMISSIVE", app: statusApp(), authorizer: denySecrets{},
		serviceOf: map[string]string{frontendID.String(): "frontend"},
	})
	since := time.Now()
	c := testutil.HTTPClient(t)
	for range 3 {
		mustGet(t, c, m.url("/items"), 200)
	}
	mustGet(t, c, m.url("/fail"), 500)
	mustGet(t, c, m.url("/secret"), 403)
	mustGet(t, c, "http://"+m.inboundAddr+"/plain", 200)
	testutil.Eventually(t, "6 requests recorded", func() bool { return inboundRequests(m) == 6 })

	st := m.serverMetrics.TrafficStats("catalog", "shop", since)
	if st.GetService() != "catalog" || st.GetNamespace() != "shop" || !st.GetCountersSince().AsTime().Equal(since) {
		t.Errorf("stats header: got %s.%s since %v", st.GetService(), st.GetNamespace(), st.GetCountersSince().AsTime())
	}
	type edge struct{ requests, failures, denied, mtls uint64 }
	want := map[string]edge{
		"shop/frontend -> shop/catalog":   {requests: 5, failures: 1, denied: 1, mtls: 5},
		"unknown/unknown -> shop/catalog": {requests: 1},
	}
	got := map[string]edge{}
	for _, e := range st.GetEdges() {
		k := e.GetSourceNamespace() + "/" + e.GetSourceService() + " -> " + e.GetDestinationNamespace() + "/" + e.GetDestinationService()
		got[k] = edge{e.GetRequests(), e.GetFailures(), e.GetDenied(), e.GetMtlsRequests()}
		var sum uint64
		for _, n := range e.GetLatencyCounts() {
			sum += n
		}
		if len(e.GetLatencyCounts()) != len(st.GetLatencyBoundsSeconds())+1 || sum != e.GetRequests() {
			t.Errorf("%s: latency counts %v, want %d buckets summing to %d requests", k, e.GetLatencyCounts(), len(st.GetLatencyBoundsSeconds())+1, e.GetRequests())
		}
	}
	if len(got) != len(want) {
		t.Errorf("edges: got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("edge %s: got %+v, want %+v", k, got[k], w)
		}
	}
}

// TestTrafficStatsFollowConfig: a caller that connected before the config
// named its service counts under that service once the config does, on
// the same connection.
func TestTrafficStatsFollowConfig(t *testing.T) {
	m := newMesh(t, meshOptions{})
	c := testutil.HTTPClient(t)
	mustGet(t, c, m.url("/"), 200)
	testutil.Eventually(t, "the first request recorded", func() bool { return inboundRequests(m) == 1 })
	named := snapshot("STRICT", "allow", m.pki.roots, m.svc)
	named.ServiceOf = map[string]string{frontendID.String(): "frontend"}
	m.snap.set(named)
	mustGet(t, c, m.url("/"), 200)
	testutil.Eventually(t, "the second request recorded", func() bool { return inboundRequests(m) == 2 })
	got := map[string]uint64{}
	for _, e := range m.serverMetrics.TrafficStats("catalog", "shop", time.Time{}).GetEdges() {
		got[e.GetSourceNamespace()+"/"+e.GetSourceService()] = e.GetRequests()
	}
	if want := map[string]uint64{"shop/unknown": 1, "shop/frontend": 1}; !maps.Equal(got, want) {
		t.Errorf("requests per source: got %v, want %v", got, want)
	}
}

// TestAccessEvents: at rate 1 every request becomes one access event
// describing it.
func TestAccessEvents(t *testing.T) {
	var log eventLog
	m := newMesh(t, meshOptions{
		app: statusApp(), authorizer: denySecrets{}, events: log.emit, accessLogRate: 1,
		serviceOf: map[string]string{frontendID.String(): "frontend"},
	})
	c := testutil.HTTPClient(t)
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	mustGet(t, c, m.url("/items?q=secret-token"), 200, "Traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	mustGet(t, c, m.url("/fail"), 500)
	mustGet(t, c, m.url("/a//../secret"), 403)
	testutil.Eventually(t, "3 access events", func() bool { return len(log.events()) >= 3 })

	evs := log.events()
	if len(evs) != 3 {
		t.Fatalf("got %d access events, want 3: %v", len(evs), evs)
	}
	for _, tt := range []struct {
		path, decision, policy, trace string
		code                          uint32
		rule                          int32
	}{
		{"/items", "allow", "", trace, 200, -1},
		{"/fail", "allow", "", "", 500, -1},
		{"/secret", "deny", "shop/no-secrets", "", 403, 2},
	} {
		var ev *pb.Event
		for _, e := range evs {
			if e.GetPath() == tt.path {
				ev = e
			}
		}
		if ev == nil {
			t.Errorf("no access event for %s (query left out, path normalized): %v", tt.path, evs)
			continue
		}
		for field, pair := range map[string][2]string{
			"kind":                  {ev.GetKind(), "access"},
			"source_id":             {ev.GetSourceId(), frontendID.String()},
			"source_service":        {ev.GetSourceService(), "frontend"},
			"source_namespace":      {ev.GetSourceNamespace(), "shop"},
			"destination_id":        {ev.GetDestinationId(), catalogID.String()},
			"destination_service":   {ev.GetDestinationService(), "catalog"},
			"destination_namespace": {ev.GetDestinationNamespace(), "shop"},
			"protocol":              {ev.GetProtocol(), "http"},
			"method":                {ev.GetMethod(), "GET"},
			"decision":              {ev.GetDecision(), tt.decision},
			"policy":                {ev.GetPolicy(), tt.policy},
			"trace_id":              {ev.GetTraceId(), tt.trace},
		} {
			if pair[0] != pair[1] {
				t.Errorf("%s: %s = %q, want %q", tt.path, field, pair[0], pair[1])
			}
		}
		if ev.GetResponseCode() != tt.code || ev.GetRule() != tt.rule {
			t.Errorf("%s: response_code %d rule %d, want %d %d", tt.path, ev.GetResponseCode(), ev.GetRule(), tt.code, tt.rule)
		}
		if ev.GetTime() == nil || ev.GetDurationMicros() > uint64(10*time.Second/time.Microsecond) {
			t.Errorf("%s: time %v duration %dµs, want a time and a plausible duration", tt.path, ev.GetTime(), ev.GetDurationMicros())
		}
	}
}

// TestAccessEventsRate: rate 0 sends none (even with an Events func), and
// a fraction samples about that fraction.
func TestAccessEventsRate(t *testing.T) {
	for _, tt := range []struct {
		rate     float64
		min, max int
	}{
		{0, 0, 0},
		{0.5, 60, 140},
	} {
		var log eventLog
		m := newMesh(t, meshOptions{events: log.emit, accessLogRate: tt.rate})
		c := testutil.HTTPClient(t)
		const n = 200
		for range n {
			mustGet(t, c, m.url("/"), 200)
		}
		testutil.Eventually(t, "every request recorded", func() bool { return inboundRequests(m) == n })
		time.Sleep(20 * time.Millisecond) // the event, if any, follows the record
		if got := len(log.events()); got < tt.min || got > tt.max {
			t.Errorf("rate %v: %d access events for %d requests, want %d to %d", tt.rate, got, n, tt.min, tt.max)
		}
	}
}

func TestCompileCollectorAddress(t *testing.T) {
	p := newPKI(t)
	for _, addr := range []string{"", "collector.trellis-system:15013"} {
		s, err := meshconfig.Compile(&pb.Snapshot{
			Version:     "1",
			Mesh:        &pb.MeshConfig{MtlsMode: "STRICT", AuthorizationDefault: "deny", CollectorAddress: addr},
			TrustBundle: [][]byte{p.ca.Roots()[0].Raw},
		})
		if err != nil {
			t.Fatal(err)
		}
		if s.CollectorAddr != addr {
			t.Errorf("CollectorAddr: got %q, want %q", s.CollectorAddr, addr)
		}
	}
}
