package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Route events (the event label of trellis_route_events_total).
const (
	RouteHit           = "hit"            // a rule took a request
	RouteMirrored      = "mirrored"       // a copy went to the mirror
	RouteMirrorSkipped = "mirror_skipped" // a copy was due but the in-flight bound or the body size said no
	RouteDelayed       = "delayed"        // a fault delay held the request
	RouteAborted       = "aborted"        // a fault abort answered the request
)

// RouteCounters count what one rule of one Route did on the outbound
// side. A nil *RouteCounters counts nothing.
type RouteCounters struct {
	hit, mirrored, mirrorSkipped, delayed, aborted prometheus.Counter
}

type routeKey struct {
	service, namespace, route string
	rule                      int
}

func newRouteEvents() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_route_events_total",
		Help: "What Routes did to outbound requests, by addressed service, Route (namespace/name), rule index and event: hit, mirrored, mirror_skipped, delayed, aborted.",
	}, []string{"destination_service", "destination_namespace", "route", "rule", "event"})
}

// Route returns the counters of rule (its index) of route ("namespace/
// name") for the addressed service. Labels are bounded by the Routes in
// the config (at most 64 rules each).
func (m *Metrics) Route(service, namespace, route string, rule int) *RouteCounters {
	if m == nil {
		return nil
	}
	return m.routes.Get(routeKey{service, namespace, route, rule}, func() *RouteCounters {
		c := m.routeEvents.MustCurryWith(prometheus.Labels{
			"destination_service": service, "destination_namespace": namespace, "route": route, "rule": strconv.Itoa(rule),
		})
		return &RouteCounters{
			hit: c.WithLabelValues(RouteHit), mirrored: c.WithLabelValues(RouteMirrored), mirrorSkipped: c.WithLabelValues(RouteMirrorSkipped),
			delayed: c.WithLabelValues(RouteDelayed), aborted: c.WithLabelValues(RouteAborted),
		}
	})
}

// Inc counts one event (a Route* constant).
func (c *RouteCounters) Inc(event string) {
	if c == nil {
		return
	}
	switch event {
	case RouteHit:
		c.hit.Inc()
	case RouteMirrored:
		c.mirrored.Inc()
	case RouteMirrorSkipped:
		c.mirrorSkipped.Inc()
	case RouteDelayed:
		c.delayed.Inc()
	case RouteAborted:
		c.aborted.Inc()
	}
}
