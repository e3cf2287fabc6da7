package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellismesh/trellis/internal/telemetry/sink"
)

var (
	lastIndexDesc = prometheus.NewDesc("trellis_collector_log_last_index",
		"Index of the newest record in the event log.", nil, nil)
	lagDesc = prometheus.NewDesc("trellis_collector_sink_lag_records",
		"Records in the event log not yet confirmed by the sink.", []string{"sink"}, nil)
	deliveredDesc = prometheus.NewDesc("trellis_collector_sink_delivered_total",
		"Records the sink confirmed since the collector started (redeliveries included).", []string{"sink"}, nil)
	failedDesc = prometheus.NewDesc("trellis_collector_sink_failed_attempts_total",
		"Failed delivery attempts to the sink; each is retried with backoff.", []string{"sink"}, nil)
)

// Describe implements prometheus.Collector: the collector's own metrics
// (and the service graph's) plus the log's and every sink's progress.
func (p *Pipeline) Describe(ch chan<- *prometheus.Desc) {
	p.Collector.Describe(ch)
	ch <- lastIndexDesc
	ch <- lagDesc
	ch <- deliveredDesc
	ch <- failedDesc
}

// Collect implements prometheus.Collector.
func (p *Pipeline) Collect(ch chan<- prometheus.Metric) {
	p.Collector.Collect(ch)
	ch <- prometheus.MustNewConstMetric(lastIndexDesc, prometheus.GaugeValue, float64(p.Events.LastIndex()))
	for i, d := range p.deliverers {
		st := d.Stats()
		name := p.sinkNames[i]
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(st.Lag), name)
		ch <- prometheus.MustNewConstMetric(deliveredDesc, prometheus.CounterValue, float64(st.Delivered), name)
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(st.FailedAttempts), name)
	}
}

// SinkStats returns each sink's progress, in --audit-sink order.
func (p *Pipeline) SinkStats() []sink.Stats {
	out := make([]sink.Stats, len(p.deliverers))
	for i, d := range p.deliverers {
		out[i] = d.Stats()
	}
	return out
}
