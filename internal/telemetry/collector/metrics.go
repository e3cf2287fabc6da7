package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
	"slices"
)

// kinds are the event kinds of telemetry.proto. The kind label takes only
// these values (anything else is "other"), so a proxy cannot blow up the
// label set by inventing kinds.
var kinds = []string{
	"authz.deny", "authz.audit_would_deny", "cert.issued", "cert.renewed", "access",
	"resource.applied", "resource.deleted", "token.created", "token.revoked", "ca.rotated",
	"egress.denied",
}

const otherKind = "other"

// Reasons of trellis_collector_stats_rejected_total.
const (
	rejectInvalid          = "invalid"
	rejectTooManyInstances = "too_many_instances"
	rejectTooFrequent      = "too_frequent"
)

// metrics are one Server's collectors. The Server is itself a
// prometheus.Collector, so they land on whichever registry it is
// registered with.
type metrics struct {
	received      *prometheus.CounterVec
	appended      *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	gaps          prometheus.Counter
	appendErrors  prometheus.Counter
	refused       *prometheus.CounterVec
	streams       prometheus.Gauge
	statsReports  prometheus.Counter
	statsRejected *prometheus.CounterVec
	anomalies     *prometheus.CounterVec

	// Children per kind, resolved once: the per-event path does a map
	// lookup, not a label hash.
	byKind map[string]*kindCounters
}

type kindCounters struct {
	received, appended, duplicates prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_collector_events_received_total",
			Help: "Events received from proxies, by kind (\"other\" for unknown kinds), before dropping resends.",
		}, []string{"kind"}),
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_collector_events_appended_total",
			Help: "Events appended to the durable event log, by kind; includes the control plane's own events.",
		}, []string{"kind"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_collector_events_duplicate_total",
			Help: "Events dropped because their instance's sequence number was already appended (resends after a lost acknowledgement).",
		}, []string{"kind"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_collector_seq_gaps_total",
			Help: "Sequence numbers skipped by proxies: events a proxy dropped (and counts in trellis_telemetry_events_dropped_total) or lost in a crash.",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_collector_append_errors_total",
			Help: "Failed appends to the event log; the batch is not acknowledged and the proxy resends it.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_collector_streams_refused_total",
			Help: "Telemetry streams ended with an error, by gRPC status code: Unauthenticated and InvalidArgument are refused proxies, Unavailable a failed append or a shutdown.",
		}, []string{"code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_collector_streams",
			Help: "Telemetry streams open now.",
		}),
		statsReports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_collector_stats_reports_total",
			Help: "Traffic counter reports from proxies recorded in the service graph and the mesh metrics.",
		}),
		statsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_collector_stats_rejected_total",
			Help: "Traffic counter reports refused, by reason: invalid (a proxy breaking the rules of TrafficStats), too_many_instances (more proxy instances than the collector tracks).",
		}, []string{"reason"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_anomalies_total",
			Help: "Anomaly alerts raised, one per episode, by detector (docs/learning.md).",
		}, []string{"detector"}),
		byKind: make(map[string]*kindCounters, len(kinds)+1),
	}
	for _, d := range anomaly.Detectors {
		m.anomalies.WithLabelValues(d)
	}
	for _, r := range []string{rejectInvalid, rejectTooManyInstances, rejectTooFrequent} {
		m.statsRejected.WithLabelValues(r)
	}
	all := append(slices.Clone(kinds), otherKind)
	for _, d := range anomaly.Detectors {
		all = append(all, "anomaly."+d)
	}
	for _, k := range all {
		m.byKind[k] = &kindCounters{
			received:   m.received.WithLabelValues(k),
			appended:   m.appended.WithLabelValues(k),
			duplicates: m.duplicates.WithLabelValues(k),
		}
	}
	return m
}

func (m *metrics) kind(k string) *kindCounters {
	if c, ok := m.byKind[k]; ok {
		return c
	}
	return m.byKind[otherKind]
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.received, m.appended, m.duplicates, m.gaps, m.appendErrors, m.refused, m.streams, m.statsReports, m.statsRejected, m.anomalies}
}
