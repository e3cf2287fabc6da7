package metrics

import "github.com/prometheus/client_golang/prometheus"

// trafficCollectors are the families of TrafficPolicy's endpoint choice
// and protection: outlier ejections and circuit breaker overflows. They
// count rare events, so their children are looked up when used.
type trafficCollectors struct {
	ejections *prometheus.CounterVec
	ejected   *prometheus.GaugeVec
	overflows *prometheus.CounterVec
}

func newTrafficCollectors() trafficCollectors {
	return trafficCollectors{
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_outbound_ejections_total",
			Help: "Endpoints ejected by outlier detection, by reason (consecutive_5xx, consecutive_gateway_errors); result=skipped counts ejections maxEjectedPercent prevented.",
		}, []string{"destination_service", "destination_namespace", "reason", "result"}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_outbound_ejected_endpoints",
			Help: "Endpoints of a destination ejected by outlier detection, as of the last ejection or return.",
		}, []string{"destination_service", "destination_namespace"}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_circuit_breaker_overflows_total",
			Help: "Outbound requests answered 503 by a TrafficPolicy's circuit breaker, by the limit that refused (max_connections, max_pending_requests).",
		}, []string{"destination_service", "destination_namespace", "policy", "limit"}),
	}
}

func (t trafficCollectors) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.ejections, t.ejected, t.overflows}
}

// Ejection counts an endpoint of the destination ejected for reason.
func (d *Dest) Ejection(reason string) {
	if d != nil {
		d.m.protection.ejections.WithLabelValues(d.service, d.ns, reason, "ejected").Inc()
	}
}

// EjectionSkipped counts an ejection maxEjectedPercent prevented.
func (d *Dest) EjectionSkipped(reason string) {
	if d != nil {
		d.m.protection.ejections.WithLabelValues(d.service, d.ns, reason, "skipped").Inc()
	}
}

// EjectedEndpoints sets how many of the destination's endpoints are
// ejected.
func (d *Dest) EjectedEndpoints(n int) {
	if d != nil {
		d.m.protection.ejected.WithLabelValues(d.service, d.ns).Set(float64(n))
	}
}

// BreakerOverflow counts a request the circuit breaker of policy refused
// at limit.
func (d *Dest) BreakerOverflow(policy, limit string) {
	if d != nil {
		d.m.protection.overflows.WithLabelValues(d.service, d.ns, policy, limit).Inc()
	}
}
