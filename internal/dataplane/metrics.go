package dataplane

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// Metric label values.
const (
	directionInbound  = "inbound"
	directionOutbound = "outbound"
)

// Reasons an inbound connection is refused (trellis_inbound_rejected_total).
const (
	rejectNoConfig     = "no_config"
	rejectPlaintext    = "plaintext"
	rejectNoClientCert = "no_client_cert"
	rejectBadPeerCert  = "bad_peer_cert"
	rejectHandshake    = "tls_handshake"
	rejectALPN         = "unsupported_alpn"
	rejectShutdown     = "shutting_down"
)

// Metrics holds the data path's Prometheus collectors on a registry of its
// own (several proxies run in one test process). A nil *Metrics records
// nothing. Label children on the hot path are cached per destination or per
// caller so a request costs a few atomic adds, not a label lookup.
type Metrics struct {
	reg *prometheus.Registry

	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	tcpConns         *prometheus.CounterVec
	tcpSent          *prometheus.CounterVec
	tcpReceived      *prometheus.CounterVec
	authz            *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	refused          *prometheus.CounterVec
	upstreamFailures *prometheus.CounterVec

	dests    cowMap[destKey, *destMetrics]
	sources  cowMap[sourceKey, *sourceMetrics]
	policies cowMap[string, *[2]prometheus.Counter] // [deny, allow]
}

// NewMetrics creates the collectors and registers them on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_requests_total",
			Help: "HTTP requests handled, by caller, destination and response code.",
		}, []string{"direction", "source_service", "source_namespace", "source_principal", "destination_service", "destination_namespace", "response_code", "mtls"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_request_duration_seconds",
			Help:    "Time from receiving an HTTP request to the end of its response body.",
			Buckets: durationBounds[:],
		}, []string{"direction", "destination_service", "destination_namespace"}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_connections_total",
			Help: "Opaque TCP connections tunneled.",
		}, []string{"direction", "destination_service", "destination_namespace"}),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_sent_bytes_total",
			Help: "Bytes of tunneled TCP sent by the destination back to the caller.",
		}, []string{"direction", "destination_service", "destination_namespace"}),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_tcp_received_bytes_total",
			Help: "Bytes of tunneled TCP received from the caller for the destination.",
		}, []string{"direction", "destination_service", "destination_namespace"}),
		authz: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_authz_decisions_total",
			Help: "Inbound authorization decisions; policy is empty when the mesh default decided. mode=audit counts what audit-mode policies would have decided.",
		}, []string{"decision", "policy", "mode"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_inbound_rejected_total",
			Help: "Inbound connections refused before any request, by reason.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_inbound_refused_requests_total",
			Help: "Inbound requests answered by the proxy before the app, by reason: bad_request (400 from the request screen), app_busy and caller_busy (503 from the app limits), body_idle (408), header_limit (431).",
		}, []string{"reason"}),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_upstream_failures_total",
			Help: "Outbound calls that could not reach a destination, by reason.",
		}, []string{"destination_service", "destination_namespace", "reason"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.tcpConns, m.tcpSent, m.tcpReceived, m.authz, m.rejected, m.refused, m.upstreamFailures,
		// go_* and process_*, as on the control plane and collector: a
		// sidecar's memory, CPU, goroutines and file descriptors.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// durationBounds are the buckets of trellis_request_duration_seconds and of
// the edge stats' latency counts (edgestats.go), in seconds.
var durationBounds = telemetry.LatencyBounds

// Registry is where the collectors are registered; the admin endpoint
// serves it and the proxy may add its own gauges.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

type destKey struct{ direction, service, namespace, srcService, srcNamespace, srcPrincipal string }

type sourceKey struct {
	srcService, namespace, principal, service, destNamespace string
	mtls                                                     bool
}

// destMetrics are the children for one direction and destination. For
// outbound, the source is this proxy, so the request counters can be
// curried here; for inbound they hang off the caller (see forSource).
type destMetrics struct {
	m           *Metrics
	service, ns string
	duration    prometheus.Observer
	requests    *codeCounters // outbound only
	tcpConns    prometheus.Counter
	tcpSent     prometheus.Counter
	tcpReceived prometheus.Counter
}

// dest returns the cached children for a destination. srcNamespace and
// srcPrincipal fill trellis_requests_total for outbound traffic.
func (m *Metrics) dest(direction, service, namespace, srcService, srcNamespace, srcPrincipal string) *destMetrics {
	if m == nil {
		return nil
	}
	k := destKey{direction, service, namespace, srcService, srcNamespace, srcPrincipal}
	return m.dests.get(k, func() *destMetrics {
		d := &destMetrics{
			m: m, service: service, ns: namespace,
			duration:    m.duration.WithLabelValues(direction, service, namespace),
			tcpConns:    m.tcpConns.WithLabelValues(direction, service, namespace),
			tcpSent:     m.tcpSent.WithLabelValues(direction, service, namespace),
			tcpReceived: m.tcpReceived.WithLabelValues(direction, service, namespace),
		}
		if direction == directionOutbound {
			d.requests = newCodeCounters(m.requests.MustCurryWith(prometheus.Labels{
				"direction": direction, "source_service": srcService, "source_namespace": srcNamespace, "source_principal": srcPrincipal,
				"destination_service": service, "destination_namespace": namespace, "mtls": "true",
			}))
		}
		return d
	})
}

// forSource returns the inbound request counters and edge stats for one
// caller.
func (m *Metrics) forSource(srcService, principal, namespace string, mtls bool, service, destNamespace string) *sourceMetrics {
	if m == nil {
		return nil
	}
	k := sourceKey{srcService, namespace, principal, service, destNamespace, mtls}
	return m.sources.get(k, func() *sourceMetrics {
		if principal == "" {
			principal = "unknown"
		}
		if namespace == "" {
			namespace = "unknown"
		}
		if srcService == "" {
			srcService = "unknown"
		}
		return &sourceMetrics{codes: newCodeCounters(m.requests.MustCurryWith(prometheus.Labels{
			"direction": directionInbound, "source_service": srcService, "source_namespace": namespace, "source_principal": principal,
			"destination_service": service, "destination_namespace": destNamespace, "mtls": strconv.FormatBool(mtls),
		}))}
	})
}

// request records one finished inbound HTTP request from caller s; denied
// says the proxy's authorization refused it.
func (d *destMetrics) request(s *sourceMetrics, code int, denied bool, start time.Time) {
	if d == nil {
		return
	}
	elapsed := time.Since(start)
	if s != nil {
		s.codes.inc(code)
		s.edge.record(code, denied, elapsed)
	}
	d.duration.Observe(elapsed.Seconds())
}

// outboundRequest records one finished outbound HTTP request.
func (d *destMetrics) outboundRequest(code int, start time.Time) {
	if d == nil {
		return
	}
	d.requests.inc(code)
	d.duration.Observe(time.Since(start).Seconds())
}

func (d *destMetrics) tcpConn() {
	if d != nil {
		d.tcpConns.Inc()
	}
}

func (d *destMetrics) upstreamFailure(reason string) {
	if d != nil {
		d.m.upstreamFailures.WithLabelValues(d.service, d.ns, reason).Inc()
	}
}

// upstreamFailure records a failure for a destination that has no cached
// children (unknown service, no config).
func (m *Metrics) upstreamFailure(service, namespace, reason string) {
	if m != nil {
		m.upstreamFailures.WithLabelValues(service, namespace, reason).Inc()
	}
}

func (m *Metrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

// RefusedRequest counts a request refused before the app, by reason
// (admission.Recorder).
func (m *Metrics) RefusedRequest(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

// AuditDecided counts what an audit-mode policy would have decided
// (admission.AuditRecorder).
func (m *Metrics) AuditDecided(policy string, allow bool) {
	if m == nil {
		return
	}
	decision := "deny"
	if allow {
		decision = "allow"
	}
	m.authz.WithLabelValues(decision, policy, "audit").Inc()
}

// Decided counts an authorization decision (admission.Recorder).
func (m *Metrics) Decided(d admission.Decision) {
	if m == nil {
		return
	}
	c := m.policies.get(d.Policy, func() *[2]prometheus.Counter {
		return &[2]prometheus.Counter{
			m.authz.WithLabelValues("deny", d.Policy, "enforce"),
			m.authz.WithLabelValues("allow", d.Policy, "enforce"),
		}
	})
	if d.Allow {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
}

// codeCounters maps response codes to counter children. Reads are lock-free
// over a tiny immutable slice: a destination sees only a handful of codes.
type codeCounters struct {
	vec  *prometheus.CounterVec
	mu   sync.Mutex
	list atomic.Pointer[[]codeCounter]
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func newCodeCounters(vec *prometheus.CounterVec) *codeCounters {
	c := &codeCounters{vec: vec}
	c.list.Store(&[]codeCounter{})
	return c
}

func (c *codeCounters) inc(code int) {
	if c == nil {
		return
	}
	for _, e := range *c.list.Load() {
		if e.code == code {
			e.c.Inc()
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.list.Load()
	for _, e := range old {
		if e.code == code {
			e.c.Inc()
			return
		}
	}
	e := codeCounter{code, c.vec.WithLabelValues(strconv.Itoa(code))}
	next := make([]codeCounter, len(old), len(old)+1)
	copy(next, old)
	next = append(next, e)
	c.list.Store(&next)
	e.c.Inc()
}

// cowMap is a copy-on-write map for caches that are read on every request
// and written rarely: reads take no lock and do not allocate.
type cowMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
	// startedOver is when the map last started over (Unix nanoseconds),
	// 0 if never; gen counts the start-overs.
	startedOver atomic.Int64
	gen         atomic.Uint64
}

// sourcesGen is the generation of the per-caller cache (see sourceFor).
func (m *Metrics) sourcesGen() uint64 {
	if m == nil {
		return 0
	}
	return m.sources.gen.Load()
}

// maxCowEntries bounds a cache fed by peers (caller identities); past it
// the cache starts over rather than grow without limit.
const maxCowEntries = 4096

func (c *cowMap[K, V]) get(k K, create func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		old = *m
		if v, ok := old[k]; ok {
			return v
		}
	}
	v := create()
	next := make(map[K]V, len(old)+1)
	startOver := len(old) >= maxCowEntries
	if !startOver {
		for ok, ov := range old {
			next[ok] = ov
		}
	}
	next[k] = v
	c.m.Store(&next)
	if startOver {
		// After the swap: a reader that loads startedOver first and
		// sees this time also sees the new map.
		c.startedOver.Store(time.Now().UnixNano())
		c.gen.Add(1)
	}
	return v
}
