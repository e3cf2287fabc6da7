package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trellismesh/trellis/internal/cowmap"
	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/telemetry"
)

// Directions (the direction label).
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Reasons an inbound connection is refused (trellis_inbound_rejected_total).
const (
	RejectNoConfig     = "no_config"
	RejectPlaintext    = "plaintext"
	RejectNoClientCert = "no_client_cert"
	RejectBadPeerCert  = "bad_peer_cert"
	RejectHandshake    = "tls_handshake"
	RejectALPN         = "unsupported_alpn"
	RejectShutdown     = "shutting_down"
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
	grpcStatus       *prometheus.CounterVec
	traffic          trafficVecs
	protection       trafficCollectors
	routeEvents      *prometheus.CounterVec // routes.go

	routes   cowmap.Map[routeKey, *RouteCounters]
	dests    cowmap.Map[destKey, *Dest]
	sources  cowmap.Map[sourceKey, *Source]
	policies cowmap.Map[string, *[2]prometheus.Counter] // [deny, allow]
}

// New creates the collectors and registers them on a new registry.
func New() *Metrics {
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
			Help: "Inbound requests answered by the proxy before the app, by reason: bad_request (400 from the request screen), app_busy and caller_busy (503 from the app limits), body_idle (408), header_limit (431), invalid_token (401: an end-user token failed verification), rate_limited (429: over a RateLimit), ext_authz_denied (an external authorization provider denied: its status), ext_authz_error (403: the provider could not answer and fails closed).",
		}, []string{"reason"}),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_upstream_failures_total",
			Help: "Outbound calls that could not reach a destination, by reason.",
		}, []string{"destination_service", "destination_namespace", "reason"}),
		grpcStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_grpc_responses_total",
			Help: "gRPC responses relayed by the HTTP/2 path, by grpc-status.",
		}, []string{"direction", "destination_service", "destination_namespace", "grpc_status"}),
		protection:  newTrafficCollectors(),
		routeEvents: newRouteEvents(),
	}
	m.traffic = newTrafficVecs()
	m.reg.MustRegister(m.traffic.retries, m.traffic.skipped, m.traffic.timeouts)
	m.reg.MustRegister(m.protection.collectors()...)
	m.reg.MustRegister(m.grpcStatus, m.routeEvents, m.requests, m.duration, m.tcpConns, m.tcpSent, m.tcpReceived, m.authz, m.rejected, m.refused, m.upstreamFailures,
		// go_* and process_*, as on the control plane and collector: a
		// sidecar's memory, CPU, goroutines and file descriptors.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// durationBounds are the buckets of trellis_request_duration_seconds and of
// the edge stats' latency counts (edgestats.go), in seconds.
var durationBounds = telemetry.LatencyBounds

// SetMaxCallers bounds the per-caller cache (cowmap.MaxEntries by
// default): past n callers it starts over. Call it before recording.
func (m *Metrics) SetMaxCallers(n int) { m.sources.Max = n }

// Registry is where the collectors are registered; the admin endpoint
// serves it and the proxy may add its own gauges.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

type destKey struct{ direction, service, namespace, srcService, srcNamespace, srcPrincipal string }

type sourceKey struct {
	srcService, namespace, principal, service, destNamespace string
	mtls                                                     bool
}

// Dest are the children for one direction and destination. For
// outbound, the source is this proxy, so the request counters can be
// curried here; for inbound they hang off the caller (see ForSource).
type Dest struct {
	m           *Metrics
	service, ns string
	duration    prometheus.Observer
	requests    *codeCounters // outbound only
	tcpConns    prometheus.Counter
	tcpSent     prometheus.Counter
	tcpReceived prometheus.Counter
	grpc        *codeCounters
	traffic     *destTraffic // outbound only
}

// Dest returns the cached children for a destination. srcNamespace and
// srcPrincipal fill trellis_requests_total for outbound traffic.
func (m *Metrics) Dest(direction, service, namespace, srcService, srcNamespace, srcPrincipal string) *Dest {
	if m == nil {
		return nil
	}
	k := destKey{direction, service, namespace, srcService, srcNamespace, srcPrincipal}
	return m.dests.Get(k, func() *Dest {
		d := &Dest{
			m: m, service: service, ns: namespace,
			duration:    m.duration.WithLabelValues(direction, service, namespace),
			tcpConns:    m.tcpConns.WithLabelValues(direction, service, namespace),
			tcpSent:     m.tcpSent.WithLabelValues(direction, service, namespace),
			tcpReceived: m.tcpReceived.WithLabelValues(direction, service, namespace),
			grpc: newCodeCounters(m.grpcStatus.MustCurryWith(prometheus.Labels{
				"direction": direction, "destination_service": service, "destination_namespace": namespace,
			})),
		}
		if direction == Outbound {
			d.requests = newCodeCounters(m.requests.MustCurryWith(prometheus.Labels{
				"direction": direction, "source_service": srcService, "source_namespace": srcNamespace, "source_principal": srcPrincipal,
				"destination_service": service, "destination_namespace": namespace, "mtls": "true",
			}))
			d.traffic = m.traffic.forDest(service, namespace)
		}
		return d
	})
}

// ForSource returns the inbound request counters and edge stats for one
// caller.
func (m *Metrics) ForSource(srcService, principal, namespace string, mtls bool, service, destNamespace string) *Source {
	if m == nil {
		return nil
	}
	k := sourceKey{srcService, namespace, principal, service, destNamespace, mtls}
	return m.sources.Get(k, func() *Source {
		if principal == "" {
			principal = "unknown"
		}
		if namespace == "" {
			namespace = "unknown"
		}
		if srcService == "" {
			srcService = "unknown"
		}
		return &Source{codes: newCodeCounters(m.requests.MustCurryWith(prometheus.Labels{
			"direction": Inbound, "source_service": srcService, "source_namespace": namespace, "source_principal": principal,
			"destination_service": service, "destination_namespace": destNamespace, "mtls": strconv.FormatBool(mtls),
		}))}
	})
}

// Request records one finished inbound HTTP request from caller s; denied
// says the proxy's authorization refused it. method and path (without
// its query; "" when the request never had one) give its shape.
func (d *Dest) Request(s *Source, method, path string, code int, denied bool, start time.Time) {
	if d == nil {
		return
	}
	elapsed := time.Since(start)
	if s != nil {
		s.codes.inc(code)
		s.edge.record(code, denied, elapsed)
		if method != "" {
			s.shapes.record(method, path, code, denied, start.Unix())
		}
	}
	d.duration.Observe(elapsed.Seconds())
}

// OutboundRequest records one finished outbound HTTP request.
func (d *Dest) OutboundRequest(code int, start time.Time) {
	if d == nil {
		return
	}
	d.requests.inc(code)
	d.duration.Observe(time.Since(start).Seconds())
}

// GRPCStatus counts one gRPC response by its grpc-status.
func (d *Dest) GRPCStatus(code int) {
	if d == nil {
		return
	}
	d.grpc.inc(code)
}

// TCPConn counts one tunneled connection.
func (d *Dest) TCPConn() {
	if d != nil {
		d.tcpConns.Inc()
	}
}

// UpstreamFailure counts a call that could not reach the destination.
func (d *Dest) UpstreamFailure(reason string) {
	if d != nil {
		d.m.upstreamFailures.WithLabelValues(d.service, d.ns, reason).Inc()
	}
}

// UpstreamFailure records a failure for a destination that has no cached
// children (unknown service, no config).
func (m *Metrics) UpstreamFailure(service, namespace, reason string) {
	if m != nil {
		m.upstreamFailures.WithLabelValues(service, namespace, reason).Inc()
	}
}

// Reject counts an inbound connection refused before any request.
func (m *Metrics) Reject(reason string) {
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
	c := m.policies.Get(d.Policy, func() *[2]prometheus.Counter {
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

// SourcesGen is the generation of the per-caller cache: after the cache
// starts over, a caller's Source is no longer reported and must be looked
// up again.
func (m *Metrics) SourcesGen() uint64 {
	if m == nil {
		return 0
	}
	return m.sources.Gen()
}

// TCPCounters returns a destination's tunneled byte counters (received
// from the caller, sent back to it); nil without metrics.
func TCPCounters(d *Dest) (received, sent prometheus.Counter) {
	if d == nil {
		return nil, nil
	}
	return d.tcpReceived, d.tcpSent
}
