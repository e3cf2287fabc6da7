package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Server's Prometheus collectors, on a registry of its own
// (no global registry: tests run several servers in one process).
type metrics struct {
	reg             *prometheus.Registry
	certsIssued     *prometheus.CounterVec
	certifyFailures *prometheus.CounterVec
	apiRequests     *prometheus.CounterVec
	applied         *prometheus.CounterVec
	tokensIssued    prometheus.Counter
	tokensRevoked   prometheus.Counter
	intermediateExp prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		certsIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_control_certificates_issued_total",
			Help: "Workload certificates signed, by how the caller authenticated (token or renewal).",
		}, []string{"via"}),
		certifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_control_certify_failures_total",
			Help: "Refused Certify calls, by gRPC status code.",
		}, []string{"code"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_control_api_requests_total",
			Help: "Admin API requests, by HTTP method and status code.",
		}, []string{"method", "code"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_control_resources_applied_total",
			Help: "Resources applied, by kind and result (created, configured, unchanged).",
		}, []string{"kind", "result"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_join_tokens_issued_total",
			Help: "Join tokens issued.",
		}),
		tokensRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_join_tokens_revoked_total",
			Help: "Join tokens revoked.",
		}),
		intermediateExp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_ca_intermediate_expiry_timestamp_seconds",
			Help: "When the CA's signing intermediate expires (Unix seconds).",
		}),
	}
	m.reg.MustRegister(m.certsIssued, m.certifyFailures, m.apiRequests, m.applied, m.tokensIssued, m.tokensRevoked, m.intermediateExp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
