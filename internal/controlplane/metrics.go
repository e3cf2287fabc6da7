package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trellismesh/trellis/internal/adminapi"
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

	connectedProxies prometheus.Gauge
	snapshotPushes   prometheus.Counter
	discovered       prometheus.Counter
	deltaPushes      prometheus.Counter
	leader           prometheus.Gauge
	acks             prometheus.Counter
	nacks            prometheus.Counter
	pushDuration     prometheus.Histogram
	streamErrors     *prometheus.CounterVec

	convergence          prometheus.Histogram
	convergenceAbandoned prometheus.Counter
	driftRepairs         prometheus.Counter
	// inconsistentSnapshots counts snapshots the consistency check kept
	// from being sent.
	inconsistentSnapshots prometheus.Counter
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
		connectedProxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_control_connected_proxies",
			Help: "Proxies with an open config stream.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_control_leader",
			Help: "1 while this replica holds the singletons' election (replicas on etcd), else 0.",
		}),
		deltaPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_snapshot_deltas_total",
			Help: "Snapshots sent as deltas (only services changed; counted in trellis_control_snapshot_pushes_total too).",
		}),
		discovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_discovered_services_total",
			Help: "Services added to a proxy's scope because it asked for them (Hello.services_wanted excluded).",
		}),
		snapshotPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_snapshot_pushes_total",
			Help: "Config snapshots sent to proxies.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_acks_total",
			Help: "Snapshot ACKs received from proxies.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_nacks_total",
			Help: "Snapshot NACKs received from proxies (a proxy could not apply a snapshot).",
		}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_control_push_duration_seconds",
			Help:    "Time of one push round that changed some proxy's snapshot: rebuilding every affected snapshot and queueing it to its stream.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_control_config_stream_errors_total",
			Help: "Config streams refused or ended with an error, by gRPC status code.",
		}, []string{"code"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trellis_control_config_convergence_seconds",
			Help: "Time from a change (resource stored or registry change) to the last ACK of every proxy whose snapshot the change altered; one sample per push round.",
			// 1 ms to about 65 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}),
		convergenceAbandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_config_convergence_abandoned_total",
			Help: "Push rounds superseded by a newer round before every affected proxy ACKed (not in the convergence histogram).",
		}),
		driftRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_drift_repairs_total",
			Help: "Snapshots re-sent because a proxy reported running other content than it acknowledged for longer than the drift grace period.",
		}),
		inconsistentSnapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_control_inconsistent_snapshots_total",
			Help: "Snapshots not sent because they failed the consistency check: once per push round for a problem in what every proxy shares (services, endpoints, virtual IPs), once per proxy for a policy it would refuse.",
		}),
	}
	m.reg.MustRegister(m.certsIssued, m.certifyFailures, m.apiRequests, m.applied, m.tokensIssued, m.tokensRevoked, m.intermediateExp,
		m.connectedProxies, m.snapshotPushes, m.discovered, m.deltaPushes, m.leader, m.acks, m.nacks, m.pushDuration, m.streamErrors,
		m.convergence, m.convergenceAbandoned, m.driftRepairs, m.inconsistentSnapshots,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchProxyStates exports trellis_control_proxies{state}, counted from
// counts at every scrape (every state is always present, 0 when none).
func (m *metrics) watchProxyStates(counts func() map[string]int) {
	m.reg.MustRegister(&proxyStatesCollector{
		desc:   prometheus.NewDesc("trellis_control_proxies", "Registered proxies (connected or within the endpoint grace period) by config sync state.", []string{"state"}, nil),
		counts: counts,
	})
}

type proxyStatesCollector struct {
	desc   *prometheus.Desc
	counts func() map[string]int
}

func (c *proxyStatesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *proxyStatesCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.counts()
	for _, st := range adminapi.ProxyStates() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[st]), st)
	}
}
