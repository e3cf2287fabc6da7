package metrics

import "github.com/prometheus/client_golang/prometheus"

// Kinds of timeout (trellis_timeouts_total's kind label).
const (
	TimeoutRequest = "request" // TrafficPolicy.timeout: the whole request
	TimeoutPerTry  = "per_try" // retries.perTryTimeout: one try
)

// trafficVecs count what a TrafficPolicy did on the outbound side.
type trafficVecs struct {
	retries, skipped, timeouts *prometheus.CounterVec
}

func newTrafficVecs() trafficVecs {
	labels := []string{"destination_service", "destination_namespace"}
	return trafficVecs{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_retries_total",
			Help: "Outbound tries beyond the first that a TrafficPolicy's retries sent.",
		}, labels),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_retries_skipped_total",
			Help: "Outbound retries a TrafficPolicy allowed but not sent, by reason: budget (the retry budget was spent).",
		}, append(labels, "reason")),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_timeouts_total",
			Help: "Outbound tries cut off by a TrafficPolicy's timeout, by kind: request (the whole request's, answered 504) or per_try.",
		}, append(labels, "kind")),
	}
}

// destTraffic are one destination's children.
type destTraffic struct {
	retries, skippedBudget, timeoutRequest, timeoutPerTry prometheus.Counter
}

func (v trafficVecs) forDest(service, namespace string) *destTraffic {
	return &destTraffic{
		retries:        v.retries.WithLabelValues(service, namespace),
		skippedBudget:  v.skipped.WithLabelValues(service, namespace, "budget"),
		timeoutRequest: v.timeouts.WithLabelValues(service, namespace, TimeoutRequest),
		timeoutPerTry:  v.timeouts.WithLabelValues(service, namespace, TimeoutPerTry),
	}
}

// Retry counts one retry sent.
func (d *Dest) Retry() {
	if d != nil && d.traffic != nil {
		d.traffic.retries.Inc()
	}
}

// RetrySkippedForBudget counts a retry the budget refused.
func (d *Dest) RetrySkippedForBudget() {
	if d != nil && d.traffic != nil {
		d.traffic.skippedBudget.Inc()
	}
}

// Timeout counts a try cut off by a timeout of kind TimeoutRequest or
// TimeoutPerTry.
func (d *Dest) Timeout(kind string) {
	if d == nil || d.traffic == nil {
		return
	}
	if kind == TimeoutRequest {
		d.traffic.timeoutRequest.Inc()
	} else {
		d.traffic.timeoutPerTry.Inc()
	}
}
